"""FABRIC's cost, measured against vanilla in the same run.

    python -m fabric.bench [--quick]              the engine on a bare SD1.5-shaped UNet (engine_bench.py)
    python -m fabric.bench.webui_bench --url URL  whole txt2img requests to a running webui (webui_bench.py)

Both print plain-text tables (text_table.py) and a JSON last line.
"""
