import sys

from taylorglo_tf.cli import main

sys.exit(main())
