from siamdyn.cli import main

raise SystemExit(main())
