"""modules/hypernetworks (v1.10.1): see hypernetwork.py (webui-host-api.md §4.2)."""
