from pretrain.cli import main
from pretrain.process_exit import exit_now

exit_now(main())
