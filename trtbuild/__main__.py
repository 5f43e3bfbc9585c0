from trtbuild.commands.cli import main

raise SystemExit(main())
