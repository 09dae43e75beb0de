from affssl.cli import main

main()
