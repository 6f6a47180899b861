from convfilter.cli import main

main()
