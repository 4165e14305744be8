"""The decision core: the machine as data, the one thread that runs it, its facts and guards."""
