from caikit.cli import main

main()
