from chainshare.cli import main

main()
