"""dmhub's side-by-side benchmark: peers, their load-generator adapters, the harness."""
