"""Writes bench/data/questions.jsonl: the question set of bench/consensus_quality.py.

Deterministic (seeded); run it again and the file does not change. Each line is
{"id", "kind", "question", "gold": [accepted answers], "type": "number"|"text"|"yesno"|"choice"}.
Kinds: arithmetic and unit conversions generated with exact answers, capitals and
facts from the lists below, yes/no, multiple choice.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow",
    "Egypt": "Cairo", "Greece": "Athens", "Ireland": "Dublin", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "the United Kingdom": "London", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago",
    "Colombia": "Bogota", "Cuba": "Havana", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ghana": "Accra", "Morocco": "Rabat", "Ethiopia": "Addis Ababa", "India": "New Delhi",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul",
    "the Philippines": "Manila", "Indonesia": "Jakarta", "Iran": "Tehran", "Iraq": "Baghdad",
    "Turkey": "Ankara", "Israel": "Jerusalem", "Saudi Arabia": "Riyadh",
    "Australia": "Canberra", "New Zealand": "Wellington", "Switzerland": "Bern",
    "the Czech Republic": "Prague", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Ukraine": "Kyiv", "Iceland": "Reykjavik", "Scotland": "Edinburgh", "Wales": "Cardiff",
    "Venezuela": "Caracas", "Uruguay": "Montevideo", "Pakistan": "Islamabad",
    "Afghanistan": "Kabul", "Nepal": "Kathmandu", "Qatar": "Doha",
}
#: Kyiv and Bogota have spellings the model may prefer
ALIASES = {"Kyiv": ["kyiv", "kiev"], "Bogota": ["bogota", "bogotá"],
           "New Delhi": ["new delhi", "delhi"], "Mexico City": ["mexico city"]}

FACTS = [
    ("What colour is the sky on a clear day?", ["blue"]),
    ("What colour is grass?", ["green"]),
    ("What colour is snow?", ["white"]),
    ("What colour is a ripe banana?", ["yellow"]),
    ("What is the largest planet in the solar system?", ["jupiter"]),
    ("What planet do we live on?", ["earth"]),
    ("Which planet is known as the red planet?", ["mars"]),
    ("What star is at the centre of our solar system?", ["sun", "the sun"]),
    ("What is frozen water called?", ["ice"]),
    ("What gas do humans need to breathe to live?", ["oxygen"]),
    ("What is the chemical symbol for water?", ["h2o"]),
    ("What is the chemical symbol for gold?", ["au"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("What is the tallest mountain in the world?", ["everest"]),
    ("What is the longest river in Africa?", ["nile"]),
    ("Which animal gives us milk?", ["cow", "cows"]),
    ("What do bees make?", ["honey"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What language is spoken in France?", ["french"]),
    ("What language is spoken in Germany?", ["german"]),
    ("What language is spoken in Spain?", ["spanish"]),
    ("In which country are the pyramids of Giza?", ["egypt"]),
    ("Which continent is Brazil in?", ["south america"]),
    ("Which continent is Kenya in?", ["africa"]),
    ("Which continent is Japan in?", ["asia"]),
    ("What is the first letter of the English alphabet?", ["a"]),
    ("What is the last letter of the English alphabet?", ["z"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("Who painted the Mona Lisa?", ["leonardo", "da vinci", "vinci"]),
    ("What is the name of the natural satellite of the Earth?", ["moon", "the moon"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What do you call a baby dog?", ["puppy"]),
    ("What metal is liquid at room temperature?", ["mercury"]),
    ("What is the hardest natural material?", ["diamond"]),
    ("What is the boiling point of water in degrees Celsius at sea level?", ["100"]),
    ("What is the freezing point of water in degrees Celsius?", ["0"]),
    ("How many legs does a spider have?", ["8"]),
    ("How many legs does an insect have?", ["6"]),
    ("How many days are in a week?", ["7"]),
    ("How many months are in a year?", ["12"]),
    ("How many hours are in a day?", ["24"]),
    ("How many continents are there?", ["7"]),
    ("How many sides does a triangle have?", ["3"]),
    ("How many sides does a square have?", ["4"]),
    ("How many sides does a hexagon have?", ["6"]),
    ("How many minutes are in an hour?", ["60"]),
    ("How many players are on a soccer team on the field?", ["11"]),
]

YES_NO = [
    ("Is the sun a star?", "yes"), ("Is the moon a planet?", "no"),
    ("Is water wet?", "yes"), ("Is ice hot?", "no"), ("Do fish live in water?", "yes"),
    ("Can birds fly?", "yes"), ("Do cows lay eggs?", "no"), ("Is Paris in France?", "yes"),
    ("Is Tokyo in China?", "no"), ("Is 7 greater than 3?", "yes"),
    ("Is 2 greater than 9?", "no"), ("Is 10 an even number?", "yes"),
    ("Is 7 an even number?", "no"), ("Is a tomato blue?", "no"),
    ("Is the Pacific an ocean?", "yes"), ("Is a cat a mammal?", "yes"),
    ("Is a shark a mammal?", "no"), ("Does the Earth orbit the sun?", "yes"),
    ("Does the sun orbit the moon?", "no"), ("Is snow cold?", "yes"),
    ("Is fire cold?", "no"), ("Is English a language?", "yes"), ("Is Berlin a country?", "no"),
    ("Is a square a shape?", "yes"), ("Do spiders have eight legs?", "yes"),
    ("Do humans have three arms?", "no"), ("Is gold a metal?", "yes"),
    ("Is wood a metal?", "no"), ("Is January the first month of the year?", "yes"),
    ("Is Monday part of the weekend?", "no"), ("Is the number 5 odd?", "yes"),
    ("Is 100 smaller than 10?", "no"), ("Are apples fruit?", "yes"),
    ("Are carrots animals?", "no"), ("Is Mount Everest a mountain?", "yes"),
    ("Is the Nile a desert?", "no"), ("Can penguins fly?", "no"),
    ("Do plants need water?", "yes"), ("Is the sky green on a clear day?", "no"),
    ("Is a week seven days long?", "yes"),
]

CHOICES = [
    ("Which of these is a fruit?", ["carrot", "apple", "potato"], 1),
    ("Which of these is an animal?", ["table", "chair", "horse"], 2),
    ("Which of these is a colour?", ["red", "dog", "run"], 0),
    ("Which of these is a planet?", ["Mars", "Paris", "Nile"], 0),
    ("Which of these is a country?", ["Berlin", "Japan", "Amazon"], 1),
    ("Which of these is a city?", ["Rome", "Spain", "Africa"], 0),
    ("Which of these is a number?", ["seven", "green", "happy"], 0),
    ("Which of these can fly?", ["fish", "eagle", "snake"], 1),
    ("Which of these lives in water?", ["whale", "camel", "tiger"], 0),
    ("Which of these is cold?", ["fire", "ice", "sun"], 1),
    ("Which of these is a vegetable?", ["broccoli", "banana", "cherry"], 0),
    ("Which of these is a musical instrument?", ["piano", "spoon", "pillow"], 0),
    ("Which of these is a metal?", ["iron", "wood", "glass"], 0),
    ("Which of these is a season?", ["winter", "Tuesday", "March"], 0),
    ("Which of these is a day of the week?", ["Friday", "April", "summer"], 0),
    ("Which of these is a month?", ["June", "Sunday", "noon"], 0),
    ("Which of these is the largest?", ["mouse", "elephant", "cat"], 1),
    ("Which of these is the smallest?", ["ant", "dog", "horse"], 0),
    ("Which of these is a shape?", ["circle", "river", "song"], 0),
    ("Which of these is a drink?", ["water", "bread", "rice"], 0),
    ("Which of these is a bird?", ["sparrow", "salmon", "beetle"], 0),
    ("Which of these is an insect?", ["ant", "frog", "owl"], 0),
    ("Which of these is a mammal?", ["dolphin", "shark", "trout"], 0),
    ("Which of these is a language?", ["French", "Paris", "Europe"], 0),
    ("Which of these is a body part?", ["hand", "shoe", "hat"], 0),
    ("Which of these is hot?", ["snow", "lava", "ice"], 1),
    ("Which of these is a tree?", ["oak", "rose", "grass"], 0),
    ("Which of these is a vehicle?", ["car", "cloud", "book"], 0),
    ("Which of these is a sport?", ["tennis", "pasta", "violin"], 0),
    ("Which of these is a continent?", ["Asia", "Canada", "Tokyo"], 0),
    ("Which number is the largest?", ["3", "12", "7"], 1),
    ("Which number is the smallest?", ["9", "4", "15"], 1),
    ("Which number is even?", ["3", "8", "5"], 1),
    ("Which number is odd?", ["4", "6", "9"], 2),
    ("Which of these is a gas?", ["oxygen", "stone", "sand"], 0),
    ("Which of these is a liquid?", ["milk", "brick", "salt"], 0),
    ("Which of these is a tool?", ["hammer", "apple", "cloud"], 0),
    ("Which of these is a flower?", ["rose", "oak", "moss"], 0),
    ("Which of these is an ocean?", ["Atlantic", "Sahara", "Alps"], 0),
    ("Which of these is a desert?", ["Sahara", "Pacific", "Andes"], 0),
]

UNITS = [
    ("How many centimetres are in {n} metres?", 100),
    ("How many minutes are in {n} hours?", 60),
    ("How many grams are in {n} kilograms?", 1000),
    ("How many days are in {n} weeks?", 7),
    ("How many seconds are in {n} minutes?", 60),
    ("How many months are in {n} years?", 12),
    ("How many millimetres are in {n} centimetres?", 10),
    ("How many hours are in {n} days?", 24),
]


def build(seed: int = 20261128) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    out: list[dict[str, object]] = []

    def add(kind: str, question: str, gold: list[str], type_: str) -> None:
        out.append({"id": f"{kind}-{sum(q['kind'] == kind for q in out):03d}", "kind": kind,
                    "question": question, "gold": gold, "type": type_})

    for _ in range(80):
        op = rnd.choice("+-*")
        if op == "*":
            a, b = rnd.randint(2, 12), rnd.randint(2, 12)
        else:
            a, b = rnd.randint(1, 50), rnd.randint(1, 50)
            if op == "-" and b > a:
                a, b = b, a
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        add("arithmetic", f"What is {a} {op.replace('*', 'x')} {b}?", [str(value)], "number")
    for _ in range(40):
        template, factor = rnd.choice(UNITS)
        n = rnd.randint(1, 9)
        add("units", template.format(n=n), [str(n * factor)], "number")
    for country, city in CAPITALS.items():
        add("capitals", f"What is the capital of {country}?",
            ALIASES.get(city, [city.lower()]), "text")
    for question, gold in FACTS:
        add("facts", question, gold, "number" if gold[0].isdigit() else "text")
    for question, gold in YES_NO:
        add("yesno", question, [gold], "yesno")
    for question, options, right in CHOICES:
        letters = "abc"
        listed = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(options))
        add("choice", f"{question} {listed}. Answer with the letter.",
            [letters[right], options[right].lower(), *[f"!{o.lower()}" for i, o in
                                                       enumerate(options) if i != right]],
            "choice")
    return out


def main() -> None:
    path = Path(__file__).with_name("questions.jsonl")
    questions = build()
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    kinds: dict[str, int] = {}
    for q in questions:
        kinds[str(q["kind"])] = kinds.get(str(q["kind"]), 0) + 1
    print(f"{len(questions)} questions -> {path}: {kinds}")


if __name__ == "__main__":
    main()
