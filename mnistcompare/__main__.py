"""python -m mnistcompare: what the package installs, one line each."""
import mnistcompare

COMMANDS = {
    "mnistcompare-train": "train one round; metrics, history, model.keras, a SavedModel, pictures",
    "mnistcompare-evaluate": "many rounds of one or more configurations, or a report's table (--study)",
    "mnistcompare-tune": "keras-tuner search (grid, random, bayesian, hyperband), then test rounds of the best",
    "mnistcompare-predict": "ask a trained model about two image files of your own",
    "mnistcompare-serve": "a trained model over TF Serving's REST API, and a page to draw two digits on (.[serve])",
}

print(f"mnistcompare {mnistcompare.__version__}: learn whether one handwritten digit is <= another (Keras 3)\n")
for name, what in COMMANDS.items():
    print(f"  {name:24} {what}")
print("\nEach takes --help. The README has the main job, the reports' tables and the Python API.")
