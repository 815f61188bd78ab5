"""Controller firmware: therapy state machine and safety logic (issue 4)."""
