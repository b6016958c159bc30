from infaas.worker.process import main

main()
