"""The Gradio app over a run directory: explore, explain, score, intervene, publish.

A thin shell: it is ``interp app`` (see ``interp/app/``), so a Hugging Face Space can run it
as ``python app.py``. Settings come from the command line or INTERP_* environment variables.

    python app.py [RUN_DIR] [--workspace DIR] [--host 0.0.0.0] [--port 7860] [--build-demo]
"""

import sys

from interp.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
