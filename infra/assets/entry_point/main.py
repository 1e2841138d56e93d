"""Driver script that spark-submit runs: ``python -m spark_jobs`` from the zip given to --py-files.

spark-submit needs a file as its Python entry point; it cannot run a module from
a zip. This script only hands over to the package, so the stages always run the
code of the artifact version that the step names.
"""

import sys

from spark_jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
