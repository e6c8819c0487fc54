"""python -m e2diffsr_core.evaluation --model FILE --data DIR --scales 2,4 --out PREFIX"""

import sys

from .evaluate import main

sys.exit(main())
