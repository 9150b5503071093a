from transferd.cli import main

raise SystemExit(main())
