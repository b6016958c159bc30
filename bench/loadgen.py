"""The closed-loop load generator, as a script (see ``infaas.loadgen``)."""

from infaas.loadgen import main

if __name__ == "__main__":
    main()
