from infaas.cli import main

main()
