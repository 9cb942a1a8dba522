"""The old name of `python -m fabric.bench.webui_bench`, kept so that scripts calling
`python -m fabric.webui_bench` (the name of releases before the folders) go on working."""
from .bench.webui_bench import main

if __name__ == "__main__":
    main()
