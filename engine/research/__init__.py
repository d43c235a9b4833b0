"""Research: parameter sweeps over backtests (specs, walk-forward folds, trials, studies, reports)."""
