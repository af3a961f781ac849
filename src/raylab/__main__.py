from raylab.cli.main import main

main()
