"""Local fakes shared by the tests and benchmarks: ``fakes.market`` (CoinGlass/Binance APIs),
``fakes.hooks`` (webhook/Telegram). With ``tests/`` on ``sys.path``: ``from fakes.market import FakeMarket``."""
