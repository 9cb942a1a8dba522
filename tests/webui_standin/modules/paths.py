"""modules/paths.py + paths_internal.py: `data_path` (the webui's --data-dir, default the webui
root). The script puts its store under `<data_path>/fabric` unless `opts.fabric_store_dir` is set
(webui-host-api.md §6 "Settings"). Tests point `data_path` at a temporary folder."""
import os
import tempfile

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.path.join(tempfile.gettempdir(), "fabric-webui-standin-data")
models_path = os.path.join(data_path, "models")
