"""`dmhub loadtest`: an open-loop load generator for dmhub (and, through
adapters, for the engines it is compared with in bench/)."""
