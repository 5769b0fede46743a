"""``python -m cnnlab.study``: the study command on its own, and the entry of parallel workers."""
import sys

from .cli import study_main

sys.exit(study_main())
