"""Runs in the webui's environment at start-up (launch_utils.run_extension_installer).

FABRIC needs nothing beyond what the webui already installs (torch, gradio, fastapi, Pillow,
numpy). The one thing that can break it is an unrelated PyPI package also called `fabric`
(the SSH tool), which would shadow this extension's engine package: warn about it here, where
the user reads the start-up log, rather than fail obscurely later.
"""
import importlib.metadata


def shadowing_distributions() -> list[str]:
    found = []
    for name in ("fabric", "fabric3"):  # both install a top-level `fabric` module
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    conflicts = shadowing_distributions()
    if conflicts:
        print(
            "FABRIC extension: the package(s) "
            + ", ".join(conflicts)
            + " in this environment provide a module named 'fabric' that can shadow the extension's"
            " engine; if FABRIC fails to load, run: pip uninstall fabric",
        )
