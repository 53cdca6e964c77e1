"""The operator console (``sentinel console``): a small web app over the product's topics and the
scorers' metrics that steers the fleet only through the control topic.

``config`` holds its validated settings, ``scrape`` reads and aggregates the scorers' Prometheus
endpoints, ``sources`` follows the topics as the console's own consumer, ``loadtest`` drives the
replayer, ``app`` serves the JSON API, the page and its server-sent events, ``openapi`` documents
the API.
"""
