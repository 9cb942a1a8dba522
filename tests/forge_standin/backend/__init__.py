"""A stand-in of Forge's `backend` package (lllyasviel/stable-diffusion-webui-forge, main dfdcbab6),
reduced to what FABRIC's Forge adapter (fabric/hosts/forge.py) touches, with the same names, call
signatures and protocols. Every module says which Forge facts (file:line at dfdcbab6) it encodes.
The attention is real (torch SDPA); the UNet is small with random weights.

tests/forge_standin/ holds `backend` only; `modules_forge` (what makes the host Forge) lives in
tests/forge_standin/marker/ so that putting `backend` on sys.path does not turn the A1111 tests
of the same run into Forge tests. The webui's `modules` come from tests/webui_standin/ (the parts
FABRIC uses are the same in both webuis).
"""
