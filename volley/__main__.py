from volley.cli import main

main()
