"""A small inventory module: the sample file `dg-lsp demo` completes."""

import json
import os
import sys
from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 0
    tags: list = field(default_factory=list)

    def total(self):
        return self.price * self.quantity

    def to_dict(self):
        return {"name": self.name, "price": self.price, "quantity": self.quantity, "tags": self.tags}


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, item):
        self.items[item.name] = item

    def remove(self, name):
        if name not in self.items:
            raise KeyError(name)
        del self.items[name]

    def get(self, name, default=None):
        return self.items.get(name, default)

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items.values())

    def total_value(self):
        return sum(item.total() for item in self.items.values())

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump([item.to_dict() for item in self], f, indent=2)

    def load(self, path):
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            for data in json.load(f):
                self.add(Item(**data))


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    inventory = Inventory()
    for path in args:
        inventory.load(path)
    print(f"{len(inventory)} items, worth {inventory.total_value():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
