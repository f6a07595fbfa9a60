"""`python -m proxy.api.report_runner IN_FD OUT_FD`: the reports process (started by the proxy)."""

from proxy.api.report_runner.worker import main

main()
