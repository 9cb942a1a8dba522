"""The FABRIC panel in gradio (3.41 for AUTOMATIC1111, 4.40 for Forge; what differs lives in
gradio_compat.py). Builds on fabric.feedback; knows no webui module."""
