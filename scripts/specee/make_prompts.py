"""Write src/foretell/specee/data/prompts_{train,eval,draft}.txt: varied instructions, one per line.

Deterministic (fixed seed); the eval file is a held-out part (its topics never appear in train or
draft). The draft file (draft-head training only) has three rounds, each appended so that the
earlier rounds' order (and their collected shards) is kept: the first 1,672 prompts, 2,858 more
(MORE_TOPICS, MORE_CODE, MORE_GENERAL), then THIRD_TOPICS.
Run: python scripts/specee/make_prompts.py
"""
import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "src" / "foretell" / "specee" / "data"

TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "volcanoes", "the French Revolution",
    "the Roman Empire", "vaccines", "climate change", "the internet", "electric cars",
    "honey bees", "the moon landing", "earthquakes", "the human heart", "recycling",
    "solar panels", "the stock market", "inflation", "democracy", "the printing press",
    "dinosaurs", "rainforests", "the ocean tides", "gravity", "magnets", "sleep",
    "coffee", "chess", "the Olympic Games", "jazz music", "the pyramids of Egypt",
    "machine learning", "cloud computing", "bicycles", "bread baking", "coral reefs",
    "the immune system", "rainbows", "glaciers", "wind turbines", "the Silk Road",
    "public libraries", "time zones", "penguins", "the periodic table", "tea",
    "blockchain", "nuclear energy", "the Renaissance", "meditation", "football",
    "volunteering", "smartphones", "antibiotics", "deserts", "owls", "trains",
    "the Amazon river", "robots", "friendship", "gardening", "origami", "spiders",
    "the theory of evolution", "airplanes", "lighthouses", "the color blue", "maps",
]

FORMS = [
    "Explain {t} in simple terms.",
    "What is {t}?",
    "Give me three interesting facts about {t}.",
    "Write a short story about {t}.",
    "Write a haiku about {t}.",
    "List five key points about {t}.",
    "Why is {t} important?",
    "Describe {t} to a ten-year-old.",
    "Write a short poem about {t}.",
    "What are the pros and cons of {t}?",
    "Summarize the history of {t} in a few sentences.",
    "How does {t} work?",
    "Write a tweet about {t}.",
    "Give me a quiz question about {t} and its answer.",
    "Write the opening paragraph of an essay on {t}.",
    "What would a scientist say about {t}?",
]

CODE = [
    "Write a Python function that reverses a string.",
    "Write a Python function to check whether a number is prime.",
    "Write a Python function that returns the factorial of n.",
    "Write a JavaScript function that sums an array of numbers.",
    "Write a Python function that counts the vowels in a string.",
    "Write a SQL query that selects all users older than 30.",
    "Write a Python class for a simple bank account.",
    "Write a Python function that merges two sorted lists.",
    "Write a bash command that counts the lines in a file.",
    "Write a Python function that computes the Fibonacci sequence up to n.",
    "Write a Python function that checks if a string is a palindrome.",
    "Write a Python list comprehension that squares the even numbers from 1 to 20.",
    "Explain what a for loop does in Python with an example.",
    "Write a Python function that finds the largest element of a list.",
    "Write a C function that swaps two integers.",
    "Write a Python function that removes duplicates from a list.",
    "Explain the difference between a list and a tuple in Python.",
    "Write a Python function that converts Celsius to Fahrenheit.",
    "Write a regular expression that matches an email address and explain it.",
    "Write a Python function that reads a text file and prints its words.",
    "Explain recursion with a short Python example.",
    "Write a Python function that returns the n-th triangular number.",
    "Write an HTML page with a title and one paragraph.",
    "Write a Python function that sorts a list of names alphabetically.",
]

GENERAL = [
    "Give me tips for studying for an exam.", "How can I improve my sleep?",
    "Plan a one-day trip to a city by the sea.", "Suggest a healthy breakfast.",
    "Write a thank-you note to a teacher.", "How do I make a cup of tea?",
    "What should I pack for a camping trip?", "Write a short motivational message.",
    "Give me a recipe for a simple pasta dish.", "How can I save money each month?",
    "Write an email asking for a meeting next week.", "What are good habits for a programmer?",
    "Tell me a joke about computers.", "Suggest names for a pet cat.",
    "How do I start learning to play the guitar?", "Write a birthday message for a friend.",
    "What is the capital of France and what is it known for?", "How many days are in a leap year?",
    "What is 15 multiplied by 12? Explain the steps.", "Convert 5 kilometers to miles.",
    "Give me a list of ten fruits.", "Name the planets of the solar system in order.",
    "What are the primary colors?", "Write a short dialogue between a cat and a dog.",
    "Describe a sunset over the mountains.", "Write a limerick about a lazy frog.",
    "How do I write a good resume?", "What is the difference between weather and climate?",
    "Give me advice for a job interview.", "Write a product description for a water bottle.",
    "Explain how to change a flat tire.", "List the days of the week in Spanish.",
]


NEW_TOPICS = [
    "the Great Wall of China", "octopuses", "snowflakes", "the human brain", "hurricanes",
    "the Moon's phases", "fungi", "the Industrial Revolution", "electricity", "submarines",
    "the Arctic", "whales", "birds migrating", "sound waves", "the metric system", "cheese making",
    "the Eiffel Tower", "ancient Greece", "microscopes", "satellites", "the piano", "kites",
    "the human skeleton", "rivers", "bamboo", "wolves", "Mars", "comets", "the telephone",
    "photography", "fire", "tornadoes", "the Sahara", "elephants", "butterflies", "chocolate",
    "the Vikings", "the Aztecs", "calendars", "batteries", "3D printing", "the alphabet",
    "soccer tactics", "marathons", "yoga", "volcanic islands", "mushrooms", "sharks", "clouds",
    "the speed of light", "money", "taxes", "museums", "bridges", "skyscrapers", "traffic lights",
    "the seasons", "rice farming", "compost", "honey",
]

EXTRA_CODE = [
    "Write a Python function that returns the sum of the digits of a number.",
    "Write a Python function that capitalizes every word in a sentence.",
    "Write a Python function that checks whether two strings are anagrams.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that returns the second largest number in a list.",
    "Write a JavaScript function that reverses an array.",
    "Write a Python function that counts word frequencies in a text.",
    "Write a Python function that computes the greatest common divisor of two numbers.",
    "Write a SQL query that counts the orders of each customer.",
    "Explain what a dictionary is in Python with an example.",
    "Write a Python function that generates a random password.",
    "Write a Python function that checks if a year is a leap year.",
    "Explain the difference between a while loop and a for loop.",
    "Write a Python function that returns the average of a list of numbers.",
    "Write a Python function that converts a binary string to an integer.",
    "Explain what an API is with a simple example.",
    "Write a Python function that finds all even numbers in a list.",
    "Write a Python function that reads a CSV file and prints each row.",
    "Explain what a variable is in programming.",
    "Write a Python function that returns the minimum and maximum of a list.",
]

EXTRA_GENERAL = [
    "Give me tips for running my first 5k race.", "How can I be more productive at work?",
    "Write a short note congratulating a colleague on a promotion.", "Suggest a vegetarian dinner.",
    "What should I do on a rainy weekend?", "Write a short speech for a school graduation.",
    "How do I care for a houseplant?", "Give me five ideas for a birthday party.",
    "Write a polite complaint about a late delivery.", "What are good ways to learn a new language?",
    "Describe a busy market in the morning.", "Write a short poem about the sea.",
    "Plan a weekly workout routine for a beginner.", "How do I make a paper airplane?",
    "Write a short review of a fictional restaurant.", "List ten animals that live in the ocean.",
    "What is 144 divided by 12? Explain the steps.", "Give me advice for a first day at a new job.",
    "Write a short story about a lost key.", "How can I reduce stress before an exam?",
]


# Added 2026-11-26 (second draft-data round): appended AFTER the first 1,672 draft prompts so the
# collected shards of the first round stay valid.
MORE_TOPICS = [
    "the Nile", "the Himalayas", "tsunamis", "lightning", "the northern lights", "caves", "fossils",
    "earthworms", "ants", "dolphins", "kangaroos", "polar bears", "frogs", "eagles", "horses",
    "cats", "dogs", "camels", "bats", "jellyfish", "sea turtles", "tigers", "pandas", "crows",
    "the Milky Way", "the sun", "Jupiter", "Saturn's rings", "asteroids", "telescopes",
    "the International Space Station", "rockets", "gravity waves", "atoms", "DNA", "cells",
    "bacteria", "viruses", "the human eye", "the digestive system", "muscles", "blood",
    "vitamins", "exercise", "nutrition", "dental care", "first aid", "hospitals", "nurses",
    "the Great Depression", "the Cold War", "the Middle Ages", "castles", "knights", "samurai",
    "the Ottoman Empire", "ancient China", "the Maya", "the Incas", "Mesopotamia", "the Titanic",
    "the printing of books", "newspapers", "radio", "television", "video games", "social media",
    "email", "search engines", "computer viruses", "passwords", "open source software",
    "databases", "programming languages", "semiconductors", "lasers", "GPS",
    "drones", "self-driving cars", "electric bikes", "highways", "ships", "canals", "ports",
    "hot air balloons", "the postal service", "banks", "credit cards", "saving money", "budgets",
    "small businesses", "advertising", "supermarkets", "farming", "wheat", "potatoes", "apples",
    "olive oil", "spices", "pizza", "sushi", "soup", "vegetarian food", "baking cookies",
    "knitting", "painting", "sculpture", "poetry", "theater", "opera", "rock music", "the guitar",
    "the violin", "drums", "dance", "film making", "cartoons", "comic books", "board games",
    "basketball", "tennis", "swimming", "cycling races", "skiing", "mountain climbing", "camping",
    "fishing", "bird watching", "national parks", "zoos", "forests", "wetlands", "grasslands",
    "soil", "water pollution", "air quality", "plastic waste", "renewable energy", "hydropower",
    "oil", "natural gas", "electric grids", "architecture", "houses", "schools", "universities",
    "teachers", "homework", "reading", "writing letters", "handwriting", "languages", "translation",
    "elections", "laws", "courts", "human rights", "cities", "villages", "immigration",
    "the United Nations", "trade", "the economy", "jobs", "teamwork", "leadership", "kindness",
    "happiness", "curiosity", "patience", "habits", "time management", "memory", "dreams",
]

MORE_CODE = [
    "Write a Python function that removes duplicates from a list while keeping the order.",
    "Write a Python function that returns the n-th prime number.",
    "Write a Python function that counts how often each character appears in a string.",
    "Write a Python function that converts Celsius to Fahrenheit.",
    "Write a Python function that checks whether a list is sorted.",
    "Write a Python function that rotates a list by k positions.",
    "Write a Python function that returns the longest word in a sentence.",
    "Write a Python function that transposes a matrix given as a list of lists.",
    "Write a Python function that implements binary search.",
    "Write a Python function that implements bubble sort.",
    "Write a Python function that validates an email address with a regular expression.",
    "Write a Python function that reads a text file and returns its number of words.",
    "Write a Python function that returns the intersection of two lists.",
    "Write a Python function that converts a Roman numeral to an integer.",
    "Write a Python function that returns the digits of a number in reverse order.",
    "Write a Python function that computes the power set of a list.",
    "Write a Python generator that yields the squares of the numbers from 1 to n.",
    "Write a Python dataclass for a point with x and y coordinates.",
    "Write a Python function that parses a date string like 2024-05-01.",
    "Write a Python function that returns the most common element of a list.",
    "Write a JavaScript function that capitalizes the first letter of a string.",
    "Write a JavaScript function that returns the maximum of an array.",
    "Write a JavaScript function that filters out the odd numbers of an array.",
    "Write a JavaScript function that debounces another function.",
    "Write a SQL query that finds the three most expensive products.",
    "Write a SQL query that joins the orders and customers tables.",
    "Write a SQL query that computes the average salary per department.",
    "Write a bash command that finds all .txt files in a folder.",
    "Write a bash script that prints the numbers from 1 to 10.",
    "Write a C function that swaps two integers.",
    "Explain what recursion is with a short example.",
    "Explain what a class is in object-oriented programming.",
    "Explain the difference between a list and a tuple in Python.",
    "Explain what an exception is and how to handle it in Python.",
    "Explain what a hash table is.",
    "Explain what Git is used for.",
    "Explain what a unit test is with a small example.",
    "Explain big O notation in simple terms.",
    "Explain what a stack and a queue are.",
    "Explain what JSON is with an example.",
]

MORE_GENERAL = [
    "How do I start a vegetable garden?", "Write a thank-you note to a teacher.",
    "Give me five tips for better sleep.", "How do I write a good resume?",
    "Suggest three books for a long train journey.", "Write a short invitation to a picnic.",
    "How can I save money on groceries?", "Write a short story about a talking cat.",
    "Describe a quiet morning in the mountains.", "What should I pack for a beach holiday?",
    "Give me a simple recipe for pancakes.", "How do I prepare for a job interview?",
    "Write a limerick about a sleepy dog.", "Explain how to change a flat bicycle tire.",
    "What are some fun activities for a family weekend?", "Write an apology for missing a meeting.",
    "How can I make new friends in a new city?", "List seven fruits that are high in vitamin C.",
    "Write a short motivational message for a friend.", "What is 15 percent of 80? Explain the steps.",
    "How do I clean a laptop keyboard?", "Write a two-sentence horror story.",
    "Give me ideas for a science fair project.", "Describe the smell of a bakery.",
    "How do I boil an egg perfectly?", "Write a short welcome message for new club members.",
    "Plan a three-day trip to a big city.", "What are the rules of tic-tac-toe?",
    "Give me advice for learning to play the guitar.", "Write a short dialogue between two robots.",
    "How can I keep my phone battery healthy?", "Name five famous paintings and their painters.",
    "Write a short fairy tale about a brave mouse.", "What are good habits for studying?",
    "How do I calm down when I feel angry?", "Write a product description for a water bottle.",
    "Explain how to tie a tie.", "Give me three riddles and their answers.",
    "Write a short letter to your future self.", "What are some easy ways to exercise at home?",
]


# Third round (2026-11-26), appended after the second.
THIRD_TOPICS = [
    "the Andes", "the Alps", "the Grand Canyon", "the Dead Sea", "the Great Barrier Reef", "Antarctica",
    "Iceland", "Japan", "India", "Brazil", "Canada", "Australia", "Kenya", "Egypt", "Norway", "Mexico",
    "Italy", "the Mediterranean Sea", "the Pacific Ocean", "the Mississippi River", "lakes", "waterfalls",
    "geysers", "sand dunes", "mountains", "islands", "beaches", "coral atolls", "the tundra", "savannas",
    "giraffes", "zebras", "lions", "cheetahs", "gorillas", "chimpanzees", "koalas", "sloths", "otters",
    "beavers", "hedgehogs", "rabbits", "squirrels", "parrots", "flamingos", "hummingbirds", "pigeons",
    "seahorses", "octopus camouflage", "salmon", "starfish", "crabs", "snails", "bees and flowers",
    "dragonflies", "ladybugs", "fireflies", "mosquitoes", "worms", "lizards", "snakes", "crocodiles",
    "tortoises", "dinosaur fossils", "mammoths", "prehistoric humans", "cave paintings", "Stonehenge",
    "the Colosseum", "the Acropolis", "the Taj Mahal", "Machu Picchu", "the Statue of Liberty",
    "the Industrial Age factories", "the steam engine", "the light bulb", "the wheel", "the compass",
    "clocks", "paper", "glass", "steel", "concrete", "plastic", "rubber", "cotton", "silk", "wool",
    "leather", "ceramics", "wood", "bricks", "gold", "silver", "copper", "diamonds", "salt", "sugar",
    "bread", "rice", "pasta", "cheese", "yogurt", "eggs", "milk", "fruit salad", "vegetables", "beans",
    "nuts", "herbs", "mint", "garlic", "tomatoes", "carrots", "bananas", "oranges", "grapes",
    "strawberries", "lemons", "coconuts", "pumpkins", "corn", "ice cream", "pancakes", "sandwiches",
    "picnics", "restaurants", "cooking at home", "kitchen safety", "table manners", "family dinners",
    "birthdays", "weddings", "holidays", "New Year celebrations", "festivals", "fireworks", "parades",
    "circuses", "magic tricks", "puzzles", "crosswords", "card games", "video game design", "toys",
    "playgrounds", "kindergarten", "high school", "exams", "scholarships", "libraries at night",
    "bookstores", "novels", "fairy tales", "myths", "legends", "superheroes", "detectives",
    "pirates", "astronauts", "firefighters", "doctors", "farmers", "pilots", "engineers", "artists",
]


def _new_round(candidates: list[str], seen: set[str], eval_topics: list[str], seed: int) -> list[str]:
    """One draft round: ``candidates`` minus duplicates, prompts already ``seen`` and eval topics,
    shuffled with ``seed``; ``seen`` grows by the round."""
    out = [p for p in dict.fromkeys(candidates) if p not in seen and not any(t in p for t in eval_topics)]
    random.Random(seed).shuffle(out)
    seen.update(out)
    return out


def draft_prompts(train: list[str], train_topics: list[str], eval_topics: list[str],
                  evals: list[str]) -> list[str]:
    """Extra prompts for the draft head: never an eval topic, never an eval or train prompt. Each
    round is appended, so the earlier rounds' order (and their collected shards) is unchanged."""
    rounds_topics = [TOPICS, NEW_TOPICS, MORE_TOPICS, THIRD_TOPICS]
    for i, a in enumerate(rounds_topics):
        for b in rounds_topics[i + 1:]:
            assert not set(a) & set(b)
    seen = set(evals) | set(train)
    first = [f.format(t=t) for t in train_topics + NEW_TOPICS for f in FORMS] + EXTRA_CODE + EXTRA_GENERAL
    second = [f.format(t=t) for t in MORE_TOPICS for f in FORMS] + MORE_CODE + MORE_GENERAL
    third = [f.format(t=t) for t in THIRD_TOPICS for f in FORMS]
    return (_new_round(first, seen, eval_topics, 1) + _new_round(second, seen, eval_topics, 2)
            + _new_round(third, seen, eval_topics, 3))


def main(seed: int = 0, out: Path | None = None) -> None:
    rng = random.Random(seed)
    topics = TOPICS[:]
    rng.shuffle(topics)
    eval_topics, train_topics = topics[:12], topics[12:]
    train, evals = [], []
    for t in train_topics:
        for form in rng.sample(FORMS, 4):
            train.append(form.format(t=t))
    for t in eval_topics:
        for form in rng.sample(FORMS, 3):
            evals.append(form.format(t=t))
    code, general = CODE[:], GENERAL[:]
    rng.shuffle(code)
    rng.shuffle(general)
    train += code[:18] + general[:24]
    evals += code[18:] + general[24:]
    rng.shuffle(train)
    rng.shuffle(evals)
    out = out or DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts_train.txt").write_text("\n".join(train) + "\n")
    (out / "prompts_eval.txt").write_text("\n".join(evals) + "\n")
    draft = draft_prompts(train, train_topics, eval_topics, evals)
    (out / "prompts_draft.txt").write_text("\n".join(draft) + "\n")
    print(f"train {len(train)} prompts, eval {len(evals)} prompts, draft {len(draft)} prompts -> {out}")


if __name__ == "__main__":
    import argparse
    from foretell.core.argtypes import seed_int

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=seed_int, default=0, help="shuffle seed (default 0: the shipped files)")
    ap.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default: {DATA_DIR})")
    cli = ap.parse_args()
    main(cli.seed, cli.out)
