"""The source of the dashboards in dashboards/*.json (see dashboards/generate.py)."""
