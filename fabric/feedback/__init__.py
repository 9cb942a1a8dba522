"""What a user sends, checks and keeps: the settings (script args, API objects, infotext), the
images they name (decoded and checked, never read from a path), the content-addressed store of
liked/disliked images and presets, and its HTTP endpoints.

Knows no UI and no webui: the panel (fabric.ui) and the hosts (fabric.hosts) build on it, and it
builds on nothing of FABRIC's but fabric.errors.
"""
