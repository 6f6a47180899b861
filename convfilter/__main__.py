from convfilter.console import main

main()
