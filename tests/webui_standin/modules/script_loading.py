"""modules/script_loading.py: `load_module(path)`.

Fact encoded (webui-host-api.md §1.1 "Import path during loading"): a script file is executed as a
module named after its file name (e.g. "fabric_script.py", dots included) through
`importlib.util.spec_from_file_location` / `module_from_spec` / `exec_module`; it is not put in
sys.modules under a package name, but everything it imports stays in sys.modules.
"""
import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
