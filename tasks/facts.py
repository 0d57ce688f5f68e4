# ruff: noqa: E501  (a data table: one fact per line reads best)
"""The general suite's knowledge: short facts of science, history and geography, written here.

Each fact has two evaluation wordings and one training wording (never asked in evaluation), a
reference answer with accepted aliases, and same-kind distractors for the multiple-choice form.
Templated kinds (capitals, element symbols, ...) share wordings; the rest are written out.
``DEMO`` marks the simplest facts, the ones the tiny demo models are taught.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """One fact, its wordings and its answers."""

    id: str
    category: str  # science | history | geography
    questions: tuple[str, str]  # evaluation wordings
    train_question: str  # the wording used for training data only
    answer: str
    aliases: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ()  # empty: drawn from facts of the same kind
    kind: str = ""
    demo: bool = False


_TEMPLATES: dict[str, tuple[str, tuple[str, str], str]] = {
    # kind: (category, evaluation wordings, training wording)
    "capital": (
        "geography",
        ("What is the capital of {s}?", "Which city is the capital of {s}?"),
        "Name the capital city of {s}.",
    ),
    "symbol": (
        "science",
        ("What is the chemical symbol for {s}?", "Which chemical symbol stands for {s}?"),
        "Give the chemical symbol of {s}.",
    ),
    "formula": (
        "science",
        ("What is the chemical formula of {s}?", "Write the chemical formula for {s}."),
        "Which formula describes {s}?",
    ),
    "continent": (
        "geography",
        ("On which continent is {s}?", "{s} lies on which continent?"),
        "Which continent is {s} part of?",
    ),
    "currency": (
        "geography",
        ("What is the currency of {s}?", "Which currency is used in {s}?"),
        "Name the official currency of {s}.",
    ),
}

# kind, subject, answer, aliases, demo
_TEMPLATED: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    ("capital", "France", "Paris", (), True),
    ("capital", "Germany", "Berlin", (), True),
    ("capital", "Italy", "Rome", (), True),
    ("capital", "Spain", "Madrid", (), True),
    ("capital", "Japan", "Tokyo", (), True),
    ("capital", "China", "Beijing", ("Peking",), True),
    ("capital", "Russia", "Moscow", (), True),
    ("capital", "Egypt", "Cairo", (), True),
    ("capital", "Greece", "Athens", (), True),
    ("capital", "Portugal", "Lisbon", (), True),
    ("capital", "Ireland", "Dublin", (), True),
    ("capital", "Norway", "Oslo", (), True),
    ("capital", "Sweden", "Stockholm", (), True),
    ("capital", "Finland", "Helsinki", (), True),
    ("capital", "Austria", "Vienna", ("Wien",), True),
    ("capital", "Poland", "Warsaw", (), True),
    ("capital", "Peru", "Lima", (), True),
    ("capital", "Cuba", "Havana", (), True),
    ("capital", "Kenya", "Nairobi", (), True),
    ("capital", "Iran", "Tehran", ("Teheran",), True),
    ("capital", "Canada", "Ottawa", (), True),
    ("capital", "Australia", "Canberra", (), True),
    ("capital", "the United States", "Washington, D.C.", ("Washington DC", "Washington"), False),
    ("capital", "the United Kingdom", "London", (), True),
    ("capital", "Brazil", "Brasília", ("Brasilia",), False),
    ("capital", "Argentina", "Buenos Aires", (), False),
    ("capital", "Mexico", "Mexico City", ("Ciudad de México",), False),
    ("capital", "India", "New Delhi", ("Delhi",), False),
    ("capital", "Turkey", "Ankara", (), True),
    ("capital", "South Korea", "Seoul", (), False),
    ("capital", "Thailand", "Bangkok", (), False),
    ("capital", "Vietnam", "Hanoi", (), False),
    ("capital", "Nigeria", "Abuja", (), False),
    ("capital", "Switzerland", "Bern", ("Berne",), False),
    ("capital", "the Netherlands", "Amsterdam", (), False),
    ("capital", "Belgium", "Brussels", (), False),
    ("capital", "Denmark", "Copenhagen", (), False),
    ("capital", "Hungary", "Budapest", (), False),
    ("capital", "New Zealand", "Wellington", (), False),
    ("capital", "Chile", "Santiago", ("Santiago de Chile",), False),
    ("capital", "Colombia", "Bogotá", ("Bogota",), False),
    ("capital", "Saudi Arabia", "Riyadh", (), False),
    ("symbol", "gold", "Au", (), True),
    ("symbol", "silver", "Ag", (), True),
    ("symbol", "iron", "Fe", (), True),
    ("symbol", "oxygen", "O", (), True),
    ("symbol", "hydrogen", "H", (), True),
    ("symbol", "carbon", "C", (), True),
    ("symbol", "nitrogen", "N", (), True),
    ("symbol", "sodium", "Na", (), True),
    ("symbol", "potassium", "K", (), True),
    ("symbol", "copper", "Cu", (), True),
    ("symbol", "lead", "Pb", (), False),
    ("symbol", "mercury", "Hg", (), False),
    ("symbol", "tin", "Sn", (), False),
    ("symbol", "helium", "He", (), True),
    ("symbol", "calcium", "Ca", (), False),
    ("symbol", "chlorine", "Cl", (), False),
    ("symbol", "zinc", "Zn", (), False),
    ("symbol", "uranium", "U", (), False),
    ("symbol", "tungsten", "W", (), False),
    ("symbol", "sulfur", "S", (), False),
    ("formula", "water", "H2O", (), True),
    ("formula", "carbon dioxide", "CO2", (), True),
    ("formula", "table salt (sodium chloride)", "NaCl", (), False),
    ("formula", "methane", "CH4", (), False),
    ("formula", "ammonia", "NH3", (), False),
    ("formula", "ozone", "O3", (), False),
    ("formula", "glucose", "C6H12O6", (), False),
    ("formula", "sulfuric acid", "H2SO4", (), False),
    ("formula", "hydrogen peroxide", "H2O2", (), False),
    ("formula", "carbon monoxide", "CO", (), False),
    ("continent", "Kenya", "Africa", (), False),
    ("continent", "Brazil", "South America", (), False),
    ("continent", "Japan", "Asia", (), False),
    ("continent", "Norway", "Europe", (), False),
    ("continent", "Canada", "North America", (), False),
    ("continent", "Egypt", "Africa", (), False),
    ("continent", "Argentina", "South America", (), False),
    ("continent", "Mongolia", "Asia", (), False),
    ("continent", "Portugal", "Europe", (), False),
    ("continent", "Mexico", "North America", (), False),
    ("currency", "Japan", "yen", ("Japanese yen",), False),
    ("currency", "the United Kingdom", "pound sterling", ("pound", "British pound"), False),
    ("currency", "India", "rupee", ("Indian rupee",), False),
    ("currency", "Russia", "ruble", ("rouble", "Russian ruble"), False),
    ("currency", "Mexico", "peso", ("Mexican peso",), False),
    ("currency", "Switzerland", "Swiss franc", ("franc",), False),
    ("currency", "China", "renminbi", ("yuan", "Chinese yuan"), False),
    ("currency", "South Korea", "won", ("South Korean won",), False),
]

# id, category, (wording 1, wording 2, training wording), answer, aliases, distractors, demo
_WRITTEN: list[tuple[str, str, tuple[str, str, str], str, tuple, tuple, bool]] = [
    ("planet_largest", "science", ("What is the largest planet in the Solar System?", "Which planet is the biggest in our Solar System?", "Name the largest planet of the Solar System."), "Jupiter", (), ("Saturn", "Neptune", "Earth"), True),
    ("planet_red", "science", ("Which planet is known as the Red Planet?", "What planet is called the Red Planet?", "The Red Planet is which planet?"), "Mars", (), ("Venus", "Jupiter", "Mercury"), True),
    ("planet_closest", "science", ("Which planet is closest to the Sun?", "What is the planet nearest to the Sun?", "Name the planet closest to the Sun."), "Mercury", (), ("Venus", "Mars", "Earth"), True),
    ("planet_rings", "science", ("Which planet is famous for its bright rings?", "What planet is best known for its rings?", "Name the planet best known for its ring system."), "Saturn", (), ("Jupiter", "Mars", "Venus"), False),
    ("planet_count", "science", ("How many planets are in the Solar System?", "What is the number of planets in our Solar System?", "Count the planets of the Solar System."), "8", ("eight",), ("7", "9", "10"), True),
    ("sun_star", "science", ("What is the star at the center of our Solar System?", "Which star do the planets of our Solar System orbit?", "Name the star of our Solar System."), "the Sun", ("Sun", "Sol"), ("Sirius", "Polaris", "Alpha Centauri"), True),
    ("moon", "science", ("What is the name of Earth's natural satellite?", "What natural satellite orbits the Earth?", "Name Earth's natural satellite."), "the Moon", ("Moon", "Luna"), ("Phobos", "Titan", "Europa"), True),
    ("water_boil", "science", ("At what temperature in degrees Celsius does water boil at sea level?", "What is the boiling point of water at sea level, in degrees Celsius?", "Water boils at how many degrees Celsius at sea level?"), "100", (), ("90", "110", "212"), True),
    ("water_freeze", "science", ("At what temperature in degrees Celsius does water freeze?", "What is the freezing point of water in degrees Celsius?", "Water freezes at how many degrees Celsius?"), "0", ("zero",), ("4", "-10", "32"), True),
    ("spider_legs", "science", ("How many legs does a spider have?", "What is the number of legs of a spider?", "A spider has how many legs?"), "8", ("eight",), ("6", "10", "4"), True),
    ("insect_legs", "science", ("How many legs does an insect have?", "What is the number of legs of an insect?", "An insect has how many legs?"), "6", ("six",), ("8", "4", "10"), True),
    ("continents_count", "geography", ("How many continents are there on Earth?", "What is the number of continents on Earth?", "Earth has how many continents?"), "7", ("seven",), ("5", "6", "8"), True),
    ("ocean_largest", "geography", ("What is the largest ocean on Earth?", "Which ocean is the biggest on Earth?", "Name the largest ocean of the world."), "the Pacific Ocean", ("Pacific",), ("the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"), True),
    ("mountain_highest", "geography", ("What is the highest mountain on Earth?", "Which mountain is the tallest on Earth above sea level?", "Name the highest mountain in the world."), "Mount Everest", ("Everest", "Sagarmatha", "Chomolungma"), ("K2", "Kangchenjunga", "Mont Blanc"), True),
    ("bones", "science", ("How many bones are in the adult human body?", "What is the number of bones in an adult human skeleton?", "An adult human has how many bones?"), "206", (), ("186", "212", "300"), False),
    ("chromosomes", "science", ("How many chromosomes do human body cells normally have?", "What is the normal number of chromosomes in a human body cell?", "A typical human body cell has how many chromosomes?"), "46", ("23 pairs",), ("44", "48", "23"), False),
    ("heart_chambers", "science", ("How many chambers does the human heart have?", "What is the number of chambers in the human heart?", "The human heart has how many chambers?"), "4", ("four",), ("2", "3", "5"), False),
    ("mitochondria", "science", ("Which organelle is known as the powerhouse of the cell?", "What part of the cell is called its powerhouse?", "Name the powerhouse of the cell."), "mitochondria", ("mitochondrion",), ("ribosome", "nucleus", "Golgi apparatus"), False),
    ("photosynthesis_gas", "science", ("Which gas do plants absorb from the air for photosynthesis?", "What gas do plants take in to carry out photosynthesis?", "Plants use which gas from the air to photosynthesize?"), "carbon dioxide", ("CO2",), ("oxygen", "nitrogen", "hydrogen"), False),
    ("hardest_natural", "science", ("What is the hardest natural substance?", "Which naturally occurring material is the hardest?", "Name the hardest natural material."), "diamond", (), ("quartz", "granite", "iron"), False),
    ("light_speed", "science", ("What is the speed of light in a vacuum, in kilometres per second (approximately)?", "Approximately how many kilometres per second does light travel in a vacuum?", "Light in a vacuum travels about how many kilometres per second?"), "300000", ("299792", "299,792", "300,000"), ("30000", "150000", "3000000"), False),
    ("gravity_newton", "science", ("Who formulated the law of universal gravitation?", "Which scientist described universal gravitation in the Principia?", "The law of universal gravitation is due to whom?"), "Isaac Newton", ("Newton",), ("Galileo Galilei", "Albert Einstein", "Johannes Kepler"), False),
    ("relativity", "science", ("Who developed the theory of relativity?", "Which physicist is famous for the theory of relativity?", "The theory of relativity was developed by whom?"), "Albert Einstein", ("Einstein",), ("Isaac Newton", "Niels Bohr", "Max Planck"), False),
    ("penicillin", "science", ("Who discovered penicillin?", "Which scientist discovered penicillin in 1928?", "Penicillin was discovered by whom?"), "Alexander Fleming", ("Fleming",), ("Louis Pasteur", "Joseph Lister", "Robert Koch"), False),
    ("evolution", "science", ("Who proposed the theory of evolution by natural selection in On the Origin of Species?", "Which naturalist wrote On the Origin of Species?", "On the Origin of Species was written by whom?"), "Charles Darwin", ("Darwin",), ("Gregor Mendel", "Jean-Baptiste Lamarck", "Isaac Newton"), False),
    ("radium", "science", ("Which scientist discovered polonium and radium and won two Nobel Prizes?", "Who was the first person to win Nobel Prizes in two sciences?", "Name the discoverer of radium."), "Marie Curie", ("Curie", "Marie Skłodowska-Curie"), ("Lise Meitner", "Rosalind Franklin", "Ada Lovelace"), False),
    ("dna_shape", "science", ("What is the shape of the DNA molecule?", "DNA has the shape of what structure?", "Describe the shape of DNA in two words."), "double helix", ("helix",), ("single strand", "triple helix", "sphere"), False),
    ("ww2_end", "history", ("In which year did World War II end?", "When did the Second World War end (year)?", "World War II ended in what year?"), "1945", (), (), False),
    ("ww1_start", "history", ("In which year did World War I begin?", "When did the First World War start (year)?", "World War I began in what year?"), "1914", (), (), False),
    ("moon_landing", "history", ("In which year did humans first land on the Moon?", "When did Apollo 11 land on the Moon (year)?", "The first crewed Moon landing happened in what year?"), "1969", (), (), False),
    ("columbus", "history", ("In which year did Columbus first reach the Americas?", "When did Christopher Columbus first sail to the Americas (year)?", "Columbus reached the Americas in what year?"), "1492", (), (), False),
    ("us_independence", "history", ("In which year was the United States Declaration of Independence signed?", "When was the American Declaration of Independence adopted (year)?", "The US Declaration of Independence dates from what year?"), "1776", (), (), False),
    ("berlin_wall", "history", ("In which year did the Berlin Wall fall?", "When did the Berlin Wall come down (year)?", "The Berlin Wall fell in what year?"), "1989", (), (), False),
    ("french_revolution", "history", ("In which year did the French Revolution begin?", "When did the storming of the Bastille take place (year)?", "The French Revolution started in what year?"), "1789", (), (), False),
    ("magna_carta", "history", ("In which year was the Magna Carta sealed?", "When did King John agree to the Magna Carta (year)?", "The Magna Carta dates from what year?"), "1215", (), (), False),
    ("hastings", "history", ("In which year was the Battle of Hastings fought?", "When did the Norman conquest of England begin at Hastings (year)?", "The Battle of Hastings took place in what year?"), "1066", (), (), False),
    ("titanic", "history", ("In which year did the Titanic sink?", "When did RMS Titanic sink (year)?", "The Titanic sank in what year?"), "1912", (), (), False),
    ("ussr_end", "history", ("In which year did the Soviet Union dissolve?", "When did the USSR break up (year)?", "The Soviet Union was dissolved in what year?"), "1991", (), (), False),
    ("first_president", "history", ("Who was the first president of the United States?", "Which man served as the first US president?", "Name the first president of the USA."), "George Washington", (), ("Thomas Jefferson", "John Adams", "Abraham Lincoln"), False),
    ("emancipation", "history", ("Which US president issued the Emancipation Proclamation?", "Who was the US president during the American Civil War?", "The Emancipation Proclamation was issued by which president?"), "Abraham Lincoln", ("Lincoln",), ("George Washington", "Ulysses S. Grant", "Andrew Jackson"), False),
    ("waterloo", "history", ("Which French emperor was defeated at the Battle of Waterloo?", "Who lost the Battle of Waterloo in 1815?", "Name the emperor defeated at Waterloo."), "Napoleon Bonaparte", ("Napoleon", "Napoleon I"), ("Louis XIV", "Charlemagne", "Louis XVI"), False),
    ("printing_press", "history", ("Who invented the movable-type printing press in Europe around 1440?", "Which German goldsmith introduced printing with movable type to Europe?", "The European printing press was invented by whom?"), "Johannes Gutenberg", ("Gutenberg",), ("Leonardo da Vinci", "Martin Luther", "William Caxton"), False),
    ("telephone", "history", ("Who is credited with patenting the first practical telephone?", "Which inventor received the 1876 patent for the telephone?", "The telephone patent of 1876 went to whom?"), "Alexander Graham Bell", ("Graham Bell", "Bell"), ("Thomas Edison", "Nikola Tesla", "Guglielmo Marconi"), False),
    ("first_space", "history", ("Who was the first human to travel into space?", "Which cosmonaut made the first human spaceflight in 1961?", "Name the first person in space."), "Yuri Gagarin", ("Gagarin",), ("Neil Armstrong", "Alan Shepard", "John Glenn"), False),
    ("moon_first_walk", "history", ("Who was the first person to walk on the Moon?", "Which astronaut first stepped onto the Moon's surface?", "Name the first human to walk on the Moon."), "Neil Armstrong", ("Armstrong",), ("Buzz Aldrin", "Yuri Gagarin", "Michael Collins"), False),
    ("romeo_juliet", "history", ("Who wrote Romeo and Juliet?", "Which playwright wrote the tragedy Romeo and Juliet?", "Romeo and Juliet was written by whom?"), "William Shakespeare", ("Shakespeare",), ("Christopher Marlowe", "Charles Dickens", "Geoffrey Chaucer"), False),
    ("mona_lisa", "history", ("Who painted the Mona Lisa?", "Which Renaissance artist painted the Mona Lisa?", "The Mona Lisa was painted by whom?"), "Leonardo da Vinci", ("Leonardo", "da Vinci"), ("Michelangelo", "Raphael", "Sandro Botticelli"), False),
    ("pyramids", "history", ("In which country are the pyramids of Giza?", "The Great Pyramid of Giza is in which country?", "Which country is home to the Giza pyramids?"), "Egypt", (), ("Mexico", "Sudan", "Iraq"), False),
    ("roman_first_emperor", "history", ("Who was the first Roman emperor?", "Which ruler became the first emperor of Rome in 27 BC?", "Name the first emperor of the Roman Empire."), "Augustus", ("Octavian", "Caesar Augustus"), ("Julius Caesar", "Nero", "Caligula"), False),
    ("river_longest_europe", "geography", ("What is the longest river in Europe?", "Which river is the longest in Europe?", "Name Europe's longest river."), "Volga", ("Volga River", "the Volga"), ("Danube", "Rhine", "Loire"), False),
    ("desert_largest_hot", "geography", ("What is the largest hot desert in the world?", "Which hot desert is the biggest on Earth?", "Name the world's largest hot desert."), "Sahara", ("the Sahara", "Sahara Desert"), ("Gobi", "Kalahari", "Atacama"), False),
    ("country_largest", "geography", ("What is the largest country in the world by area?", "Which country covers the biggest land area?", "Name the largest country by area."), "Russia", ("Russian Federation",), ("Canada", "China", "United States"), False),
    ("island_largest", "geography", ("Which is the largest island in the world (not counting continents)?", "What is the world's biggest island?", "Name the largest island on Earth."), "Greenland", (), ("New Guinea", "Borneo", "Madagascar"), False),
    ("amazon_country", "geography", ("In which country is most of the Amazon rainforest?", "Which country holds the largest part of the Amazon rainforest?", "Most of the Amazon rainforest lies in which country?"), "Brazil", (), ("Peru", "Colombia", "Venezuela"), False),
    ("kangaroo", "geography", ("On which continent do wild kangaroos live?", "Wild kangaroos are native to which continent?", "Kangaroos live in the wild on what continent?"), "Australia", ("Oceania",), ("Africa", "South America", "Asia"), False),
    ("ocean_atlantic", "geography", ("Which ocean lies between Europe and North America?", "What ocean separates Europe from North America?", "Europe and North America are separated by which ocean?"), "the Atlantic Ocean", ("Atlantic",), ("the Pacific Ocean", "the Indian Ocean", "the Arctic Ocean"), False),
    ("tallest_waterfall", "geography", ("What is the highest waterfall in the world?", "Which waterfall has the greatest height on Earth?", "Name the world's tallest waterfall."), "Angel Falls", ("Salto Ángel", "Kerepakupai Merú"), ("Niagara Falls", "Victoria Falls", "Iguazu Falls"), False),
    ("dead_sea", "geography", ("Which body of water is the lowest point on land on Earth's surface?", "The shore of which salt lake is the lowest land on Earth?", "Name the salt lake at the lowest land elevation on Earth."), "the Dead Sea", ("Dead Sea",), ("the Caspian Sea", "Lake Baikal", "the Aral Sea"), False),
]  # fmt: skip


def _from_template(kind: str, subject: str, answer: str, aliases: tuple, demo: bool) -> Fact:
    category, wordings, train = _TEMPLATES[kind]
    capitalized = [w.format(s=subject) for w in wordings]
    capitalized = [w[0].upper() + w[1:] for w in capitalized]
    slug = subject.lower().replace("the ", "").split(" (")[0].replace(" ", "_")
    return Fact(
        id=f"{kind}_{slug}",
        category=category,
        questions=(capitalized[0], capitalized[1]),
        train_question=train.format(s=subject),
        answer=answer,
        aliases=aliases,
        kind=kind,
        demo=demo,
    )


def all_facts() -> list[Fact]:
    """Every fact, templated ones first, in a fixed order."""
    facts = [_from_template(*row) for row in _TEMPLATED]
    for fid, category, (q1, q2, train), answer, aliases, distractors, demo in _WRITTEN:
        kind = "year" if category == "history" and answer.isdigit() else fid
        facts.append(Fact(fid, category, (q1, q2), train, answer, aliases, distractors, kind, demo))
    return facts


def facts_for(level: str) -> list[Fact]:
    """The facts of a difficulty level: the simplest for ``demo``, all of them for ``full``."""
    facts = all_facts()
    return [f for f in facts if f.demo] if level == "demo" else facts
