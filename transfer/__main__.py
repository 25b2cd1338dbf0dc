from pretrain.process_exit import exit_now
from transfer.cli import main

exit_now(main())
