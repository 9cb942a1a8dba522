"""modules/sd_vae.py: `loaded_vae_file` (None when the checkpoint's own VAE is used). The script
keys its reference-latent cache by model hash, this and the encode method (webui-host-api.md §5:
a latent of another VAE is another latent)."""
loaded_vae_file = None
base_vae = None
