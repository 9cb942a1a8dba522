"""A hand-written stand-in for the AUTOMATIC1111 webui's `modules` package (v1.10.1), for CI.

Nothing of the real webui is imported or copied wholesale: every submodule here re-implements only
what scripts/fabric_script.py and the sampling path it hooks into use, and its docstring names the
facts it encodes with the section of /work/shared/webui-host-api.md and the webui file it mirrors.
The tests put `tests/webui_standin` first on sys.path, so `import modules` finds this package, and
load the script the way the webui does (modules/scripts.py `load_scripts`).

Configuration mirrored: CPU, float32 (`--use-cpu all --precision full --no-half`), so
`devices.autocast()` is a null context as in the real devices.py for float32; no --medvram.
"""
