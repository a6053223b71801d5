from volley.cli.app import main

main()
