from volley.commands import main

main()
