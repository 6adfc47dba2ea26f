"""`python -m topology`: print the topics and the processing graph of the current settings.

`--picture` prints the graph as a Mermaid flowchart instead; `--update-readme`, run in a checkout, writes that
picture into its README.md, between the topology markers (a unit test checks that the two agree).
"""

import argparse
import sys
from pathlib import Path

from streams.config import Settings
from topology.graph import declare_graph, describe_graph, picture, readme_with_picture
from topology.topics import declare, describe

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--picture", action="store_true", help="print the graph as a Mermaid flowchart")
parser.add_argument("--update-readme", action="store_true", help="redraw the README's picture from the graph")
args = parser.parse_args()
settings = Settings.from_env()
graph = declare_graph(settings)
if args.update_readme:
    readme = Path("README.md")
    readme.write_text(readme_with_picture(readme.read_text(), picture(declare_graph(Settings.from_env({})))))
elif args.picture:
    print(picture(graph))
else:
    print(describe(declare(settings)))
    print()
    print(describe_graph(graph, settings.app_id))
sys.exit(0)
