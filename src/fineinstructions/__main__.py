from fineinstructions.cli import main

raise SystemExit(main())
