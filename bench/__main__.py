import sys

from bench.run_benchmarks import main

sys.exit(main())
