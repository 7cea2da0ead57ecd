"""Deterministic generator of the embedded instruction-following data.

`python -m lora_tsd.data.instruction_data.make_data` rewrites the two committed files next to it:
- train.jsonl: Alpaca rows (instruction, input, output) whose output satisfies every listed
  IFEval constraint under lm-eval's strict checker; each row keeps its instruction ids, kwargs
  and topic so a test can re-check it.
- ifeval_prompts.jsonl: held-out prompts in google/IFEval's schema (key, prompt,
  instruction_id_list, kwargs), on topics disjoint from the training topics.
Hand-written topics (a few plain, comma-free facts each) are crossed with constraint types from
lm-eval's `instructions_registry`. All choices come from one seeded `random.Random`, so two runs
write byte-identical files.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

SEED = 20240611
TRAIN_FILE = "train.jsonl"
PROMPTS_FILE = "ifeval_prompts.jsonl"

LOWER = "change_case:english_lowercase"
CAPITAL = "change_case:english_capital"
BULLETS = "detectable_format:number_bullet_lists"
TITLE = "detectable_format:title"
JSON = "detectable_format:json_format"
HIGHLIGHT = "detectable_format:number_highlighted_sections"
NO_COMMA = "punctuation:no_comma"
END = "startend:end_checker"
QUOTE = "startend:quotation"
KEYWORDS = "keywords:existence"
KEY_FREQ = "keywords:frequency"
FORBIDDEN = "keywords:forbidden_words"
LETTER = "keywords:letter_frequency"
WORDS = "length_constraints:number_words"
PARAGRAPHS = "length_constraints:number_paragraphs"
REPEAT = "combination:repeat_prompt"
POSTSCRIPT = "detectable_content:postscript"

# Training topics: name (must not occur in any eval prompt), title, request, two keywords
# that occur in the facts, and five comma-free facts (so no_comma needs no rewriting).
TRAIN_TOPICS = [
    ("bicycle", "How a Bicycle Moves", "Explain how a bicycle works.", ["pedals", "chain"], [
        "A rider pushes the pedals to turn a toothed wheel called the chainring.",
        "The chain carries that turning force to a smaller gear on the back wheel.",
        "Gears let the rider trade speed for easier pedaling on steep hills.",
        "Brakes press pads against the wheel rim or a disc to slow the bike down.",
        "Balance comes from steering and forward motion working together."]),
    ("tides", "Why the Sea Rises and Falls", "Describe what causes ocean tides.", ["gravity", "ocean"], [
        "Tides are the regular rise and fall of the sea along the coast.",
        "They are caused mainly by the pull of the moon's gravity on the ocean.",
        "The sun also pulls on the water but its effect is about half as strong.",
        "Most coasts see two high tides and two low tides each day.",
        "Spring tides are extra large because the sun and moon line up."]),
    ("bread", "From Dough to Loaf", "Explain how bread is baked.", ["yeast", "dough"], [
        "Bread starts as a simple dough of flour and water with a little salt and yeast.",
        "Kneading the dough builds gluten which makes it stretchy and strong.",
        "The yeast feeds on sugars in the flour and gives off carbon dioxide gas.",
        "The gas forms bubbles that make the dough rise while it rests.",
        "Baking in a hot oven sets the soft inside and browns the crust."]),
    ("water cycle", "The Journey of Water", "Describe the water cycle.", ["evaporation", "rain"], [
        "The sun warms oceans and lakes so that water turns into vapor.",
        "This step is called evaporation and it lifts water into the air.",
        "As the vapor rises it cools and condenses into tiny cloud droplets.",
        "When the droplets grow heavy they fall back as rain or snow.",
        "Rivers and groundwater then carry the water back to the sea."]),
    ("volcano", "Inside an Eruption", "Explain how a volcano erupts.", ["magma", "pressure"], [
        "A volcano is an opening in the crust where molten rock escapes.",
        "Deep underground this molten rock is called magma.",
        "Gas dissolved in the magma builds pressure as the magma rises.",
        "When the pressure is too great the volcano erupts lava and ash.",
        "Over many eruptions the cooled lava builds a tall cone."]),
    ("photosynthesis", "How Plants Make Food", "Explain photosynthesis in simple terms.",
     ["sunlight", "oxygen"], [
        "Photosynthesis is how green plants make food from light.",
        "Leaves capture sunlight with a green pigment called chlorophyll.",
        "The plant takes in carbon dioxide from the air and water from the soil.",
        "It uses the light energy to turn them into sugar.",
        "Oxygen is released as a by-product which animals need to breathe."]),
    ("honeybee", "The Making of Honey", "Describe how honeybees make honey.", ["nectar", "hive"], [
        "Honeybees collect sweet nectar from flowers with their long tongues.",
        "They store the nectar in a special stomach and fly back to the hive.",
        "Worker bees pass the nectar to each other and add enzymes.",
        "They fan their wings to dry it until it thickens into honey.",
        "The honey is sealed in wax cells to feed the colony in winter."]),
    ("rainbow", "Colors After the Rain", "Explain how a rainbow forms.", ["light", "raindrops"], [
        "A rainbow appears when sunlight shines through falling raindrops.",
        "Each drop bends the light as it enters and leaves the water.",
        "Different colors bend by slightly different amounts.",
        "This spreads white light into a band of colors from red to violet.",
        "You can see a rainbow only when the sun is behind you."]),
    ("compass", "Finding North", "Explain how a magnetic compass works.", ["needle", "north"], [
        "A compass has a small magnetized needle that can spin freely.",
        "The earth acts like a giant magnet with a field around it.",
        "The needle lines up with this magnetic field.",
        "One end of the needle therefore points toward magnetic north.",
        "Sailors and hikers have used compasses to find their way for centuries."]),
    ("lighthouse", "Guardians of the Coast", "Describe the purpose of a lighthouse.", ["lamp", "ships"], [
        "A lighthouse is a tall tower with a bright lamp at the top.",
        "It warns ships about rocks and shallow water near the coast.",
        "A large lens focuses the lamp into a strong beam.",
        "Each lighthouse flashes in its own pattern so sailors can identify it.",
        "Today most lighthouses run automatically without a keeper."]),
    ("recycling", "Why Recycling Matters", "Explain why recycling matters.", ["waste", "materials"], [
        "Recycling turns used items into new products.",
        "Paper and glass are two materials that are easy to recycle.",
        "Recycling reduces the waste that ends up in landfills.",
        "It also saves energy because making things from scratch takes more power.",
        "Clean and sorted items are the most useful to recycling plants."]),
    ("thunderstorm", "Birth of a Storm", "Describe how a thunderstorm develops.", ["lightning", "clouds"], [
        "A thunderstorm begins when warm moist air rises quickly.",
        "The rising air cools and forms tall clouds called cumulonimbus.",
        "Ice and water inside the clouds collide and build electric charge.",
        "Lightning is a giant spark that releases that charge.",
        "Thunder is the sound of air expanding rapidly around the lightning."]),
    ("coffee", "From Cherry to Cup", "Explain how coffee gets from the plant to the cup.",
     ["beans", "roasting"], [
        "Coffee comes from the seeds of red fruits called coffee cherries.",
        "Farmers pick the cherries and remove the fruit to get the beans.",
        "The green beans are dried and shipped around the world.",
        "Roasting turns the beans brown and creates their rich flavor.",
        "The roasted beans are ground and mixed with hot water to brew a drink."]),
    ("chess", "The Game of Kings", "Describe the basic rules of chess.", ["king", "board"], [
        "Chess is played by two players on a board of sixty four squares.",
        "Each player starts with sixteen pieces including one king.",
        "Every kind of piece moves in its own way.",
        "The goal is to trap the opposing king so it cannot escape.",
        "This final trap is called checkmate and it ends the game."]),
    ("vaccine", "Training the Body", "Explain how vaccines protect people.", ["immune", "disease"], [
        "A vaccine trains the body to recognize a germ before a real infection.",
        "It contains a harmless piece or a weakened form of the germ.",
        "The immune system responds by making antibodies and memory cells.",
        "If the real germ arrives later the body fights it off quickly.",
        "This protects the person and slows the spread of disease."]),
    ("glacier", "Rivers of Ice", "Describe how glaciers form and move.", ["ice", "snow"], [
        "A glacier is a huge mass of ice that moves slowly over the land.",
        "It forms where more snow falls each winter than melts during the summer.",
        "Layers of snow press down and slowly turn into thick solid ice.",
        "Gravity makes the heavy ice flow downhill like a very slow river.",
        "As glaciers move they carve out valleys and carry rocks for long distances."]),
    ("moon", "The Changing Moon", "Explain why the moon has phases.", ["sunlight", "orbit"], [
        "The moon does not make its own light.",
        "We see it because it reflects sunlight.",
        "As the moon travels its orbit around the earth we see different amounts of its lit side.",
        "A full moon shows the whole bright face and a new moon shows almost none.",
        "One full cycle of phases takes about twenty nine and a half days."]),
    ("earthquake", "When the Ground Shakes", "Explain what causes earthquakes.", ["plates", "faults"], [
        "The outer shell of the earth is broken into large moving plates.",
        "Where plates meet they can lock together along cracks called faults.",
        "Stress builds up slowly as the plates keep pushing.",
        "When the rocks suddenly slip the stored energy shakes the ground.",
        "Scientists measure the shaking with instruments called seismometers."]),
    ("solar panel", "Power from Sunlight", "Explain how solar panels make electricity.",
     ["cells", "electricity"], [
        "Solar panels are made of many small cells usually built from silicon.",
        "When sunlight hits a cell it knocks electrons loose.",
        "The cell is designed so those electrons flow in one direction.",
        "This flow of electrons is an electric current.",
        "An inverter changes the current so homes can use the electricity."]),
    ("compost", "Turning Scraps into Soil", "Describe how composting works.", ["microbes", "soil"], [
        "Composting turns food scraps and yard waste into rich soil.",
        "Tiny microbes such as bacteria and fungi break the material down.",
        "The pile needs air and moisture for the microbes to work well.",
        "Mixing green scraps with dry brown leaves keeps the balance right.",
        "After a few months the pile becomes dark crumbly compost."]),
    ("penguin", "Staying Warm on the Ice", "Describe how penguins survive in the cold.",
     ["feathers", "fat"], [
        "Penguins are birds that cannot fly but swim very well.",
        "Dense feathers trap a layer of air that keeps them warm.",
        "A thick layer of fat under the skin also holds in heat.",
        "Emperor penguins huddle together in large groups during storms.",
        "They take turns standing on the cold outside of the huddle."]),
    ("heart", "The Body's Pump", "Explain how the human heart works.", ["blood", "pump"], [
        "The heart is a muscle about the size of a fist.",
        "It acts as a pump that pushes blood through the body.",
        "The right side sends blood to the lungs to pick up oxygen.",
        "The left side sends that oxygen rich blood to every organ.",
        "Valves inside the heart keep the blood flowing in one direction."]),
    ("airplane", "How Wings Lift a Plane", "Explain how an airplane stays in the air.", ["wings", "lift"], [
        "An airplane flies because its wings produce a force called lift.",
        "The wings are shaped and tilted so they push air downward.",
        "Pushing air down creates an upward force on the wings.",
        "Engines provide thrust that moves the plane forward fast enough.",
        "The pilot uses movable flaps on the wings to climb or turn."]),
    ("printing press", "Gutenberg's Machine", "Describe the invention of the printing press.",
     ["type", "books"], [
        "The printing press was developed in Europe by Johannes Gutenberg around 1450.",
        "It used small metal letters called movable type.",
        "Workers arranged the type into pages and covered it with ink.",
        "A press then pushed paper firmly onto the inked letters.",
        "Books became cheaper and ideas spread much faster than before."]),
    ("refrigerator", "Keeping Food Cold", "Explain how a refrigerator keeps food cold.",
     ["refrigerant", "heat"], [
        "A refrigerator moves heat from inside the box to the room outside.",
        "A liquid called refrigerant flows through pipes in a closed loop.",
        "Inside the fridge the refrigerant evaporates and absorbs heat.",
        "A compressor squeezes the gas which makes it hot.",
        "Coils on the back release that heat into the kitchen."]),
    ("coral reef", "Cities under the Sea", "Describe what coral reefs are.", ["coral", "algae"], [
        "Coral reefs are built by tiny animals called coral polyps.",
        "Each polyp makes a hard skeleton of limestone.",
        "Over many years these skeletons pile up into large reefs.",
        "Algae living inside the coral make food from sunlight.",
        "Reefs shelter about a quarter of all ocean fish species."]),
    ("library", "What a Library Offers", "Describe what a public library offers.", ["books", "librarians"], [
        "A public library lends books to anyone with a library card.",
        "Many libraries also lend movies and music.",
        "Librarians help people find information and answer questions.",
        "Quiet reading rooms give students a place to study.",
        "Libraries often host story times and classes for the community."]),
    ("sleep", "Why We Sleep", "Explain why sleep is important.", ["brain", "memory"], [
        "Sleep gives the body and brain time to rest and repair.",
        "During deep sleep the body restores muscles and tissues.",
        "The brain sorts new information and strengthens memory.",
        "Most adults need about seven to nine hours each night.",
        "Too little sleep makes it harder to focus and stay healthy."]),
    ("rice", "Growing Rice", "Describe how rice is grown.", ["paddies", "grain"], [
        "Rice is a grain that feeds more than half the people on earth.",
        "It is often grown in flooded fields called paddies.",
        "Farmers plant young seedlings in the shallow water.",
        "The water helps keep weeds and pests away from the crop.",
        "After a few months the fields are drained and the grain is harvested."]),
    ("wind turbine", "Power from Moving Air", "Explain how a wind turbine generates power.",
     ["blades", "generator"], [
        "A wind turbine turns the energy of moving air into electricity.",
        "Wind pushes on the long blades and makes them spin.",
        "The blades turn a shaft connected to a gearbox.",
        "The gearbox speeds up the rotation for the generator.",
        "The generator uses magnets and coils to produce electric current."]),
]

# Held-out topics for the eval prompts: name, request, two keywords, two forbidden words.
EVAL_TOPICS = [
    ("octopus", "Write a short description of how an octopus hunts.", ["arms", "camouflage"], ["fish", "sea"]),
    ("desert plants", "Describe how plants survive in a desert.", ["roots", "cactus"], ["sand", "hot"]),
    ("origami", "Explain what origami is and how a beginner can start.", ["paper", "fold"], ["easy", "fun"]),
    ("telescope", "Explain how a telescope helps people see distant objects.", ["lens", "mirror"],
     ["stars", "big"]),
    ("kite", "Describe how to fly a kite.", ["string", "wind"], ["sky", "run"]),
    ("aqueduct", "Describe how Roman aqueducts carried water to cities.", ["arches", "slope"],
     ["pipe", "empire"]),
    ("snowflake", "Explain how snowflakes form.", ["crystals", "six"], ["cold", "white"]),
    ("bamboo", "Write a short note about why bamboo grows so fast.", ["grass", "shoots"], ["tree", "tall"]),
    ("cheese", "Explain how cheese is made.", ["milk", "curds"], ["cow", "tasty"]),
    ("hot air balloon", "Explain how a hot air balloon rises.", ["burner", "envelope"], ["float", "sky"]),
    ("submarine", "Describe how a submarine dives and surfaces.", ["ballast", "tanks"], ["deep", "boat"]),
    ("firefly", "Explain why fireflies glow at night.", ["light", "chemical"], ["bug", "summer"]),
    ("mushroom", "Describe how mushrooms grow.", ["spores", "fungi"], ["plant", "forest"]),
    ("piano", "Explain how a piano makes sound.", ["hammers", "strings"], ["keys", "music"]),
    ("steam locomotive", "Describe how a steam locomotive works.", ["boiler", "pistons"], ["train", "fast"]),
    ("elevator", "Explain how an elevator moves between floors.", ["cables", "counterweight"],
     ["building", "fast"]),
    ("sea salt", "Describe how sea salt is harvested.", ["evaporate", "ponds"], ["white", "food"]),
    ("hurricane", "Explain how a hurricane forms over the ocean.", ["warm", "eye"], ["storm", "wind"]),
    ("camel", "Explain how camels survive long trips through dry land.", ["hump", "fat"], ["sand", "hot"]),
    ("glassmaking", "Describe how glass is made.", ["sand", "furnace"], ["clear", "window"]),
    ("sundial", "Explain how a sundial tells time.", ["shadow", "gnomon"], ["clock", "hour"]),
    ("pottery", "Describe how pottery is made from clay.", ["kiln", "wheel"], ["mud", "bowl"]),
    ("volleyball", "Describe the basic rules of volleyball.", ["net", "serve"], ["ball", "team"]),
    ("chocolate", "Explain how chocolate is made from cacao beans.", ["cacao", "roast"], ["sugar", "sweet"]),
]

# Natural-language phrasings, as IFEval prompts word them; {…} fields come from the kwargs.
PHRASES = {
    LOWER: ["Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed.",
            "Please reply in English using only lowercase letters. No capital letters are allowed.",
            "Make sure your entire response is in English and in all lowercase letters."],
    CAPITAL: ["Your entire response should be in English, and in all capital letters.",
              "Your answer must be in English and in all capital letters.",
              "Please write your entire response in English using only capital letters."],
    BULLETS: ["Your answer must contain exactly {num_bullets} bullet points. "
              "Use the markdown bullet points such as:\n* This is point 1.\n* This is point 2",
              "Answer with exactly {num_bullets} bullet points in markdown format, such as:\n"
              "* This is a point.",
              "Give exactly {num_bullets} markdown bullet points and nothing else."],
    TITLE: ["Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
            "Include a title wrapped in double angular brackets, i.e. <<title>>.",
            "Give your answer a title wrapped in double angular brackets, such as <<my title>>."],
    JSON: ["Entire output should be wrapped in JSON format. You can use markdown ticks such as ```.",
           "Wrap your entire output in JSON format.",
           "Please format your whole answer as valid JSON."],
    HIGHLIGHT: ["Highlight at least {num_highlights} sections in your answer with markdown, "
                "i.e. *highlighted section*.",
                "Use markdown to highlight at least {num_highlights} sections, like *this part*."],
    NO_COMMA: ["In your entire response, refrain from the use of any commas.",
               "Do not use any commas in your response.",
               "Please avoid using commas anywhere in your answer."],
    END: ["Finish your response with this exact phrase {end_phrase}. No other words should follow this phrase.",
          'End your response with the exact phrase "{end_phrase}" and let no other words follow it.',
          'Your response must end with the exact phrase "{end_phrase}" and nothing after it.'],
    QUOTE: ["Wrap your entire response with double quotation marks.",
            "Please wrap your whole answer in double quotation marks.",
            "Put your entire response inside double quotation marks."],
    KEYWORDS: ["Include keywords {kw0}, {kw1} in the response.",
               'Make sure to include the words "{kw0}" and "{kw1}" in your answer.',
               "Your response must contain the keywords {kw0} and {kw1}."],
    KEY_FREQ: ["In your response, the word {keyword} should appear {relation} {frequency} times.",
               'Use the word "{keyword}" {relation} {frequency} times in your answer.'],
    FORBIDDEN: ["Do not include keywords {fw0}, {fw1} in the response.",
                'Avoid the words "{fw0}" and "{fw1}" in your answer.'],
    LETTER: ["In your response, the letter {letter} should appear {let_relation} {let_frequency} times.",
             "Make sure the letter {letter} appears {let_relation} {let_frequency} times in your answer."],
    WORDS: ["Answer with {relation} {num_words} words.",
            "Your entire response should contain {relation} {num_words} words.",
            "Make sure your answer has {relation} {num_words} words."],
    PARAGRAPHS: ["There should be {num_paragraphs} paragraphs. "
                 "Paragraphs are separated with the markdown divider: ***",
                 "Write exactly {num_paragraphs} paragraphs separated by the markdown divider ***.",
                 "Your response should contain {num_paragraphs} paragraphs separated by ***."],
    REPEAT: ["First repeat the request word for word without change, then give your answer (1. do not "
             "say any words or characters before repeating the request; 2. the request you need to "
             "repeat does not include this sentence)",
             "Before answering, repeat the request above word for word without change. Do not say "
             "anything before the repeated request, and do not repeat this sentence."],
    POSTSCRIPT: ["At the end of your response, please explicitly add a postscript starting with {postscript_marker}",
                 "Add a postscript at the end of your answer starting with {postscript_marker}"],
}
# Each ends in ? or ! so "phrase {end_phrase}." never reads "..".
END_PHRASES = ["Is there anything else I can help with?", "Any other questions?",
               "Let me know if you have additional questions!", "Hope this helps!"]
PS_MARKERS = ["P.S.", "P.P.S"]
PS_LINES = ["Ask me if you would like more detail about {name}.",
            "I can share more facts about {name} if you are curious.",
            "There is much more to learn about {name}."]

# Training: 15 single constraints, rotated over topics (8 per topic), plus 2 pairs per topic.
SINGLES = [LOWER, CAPITAL, BULLETS, TITLE, NO_COMMA, END, QUOTE, KEYWORDS, WORDS, PARAGRAPHS,
           JSON, REPEAT, POSTSCRIPT, LETTER, KEY_FREQ]
PAIRS = [(LOWER, TITLE), (CAPITAL, NO_COMMA), (BULLETS, END), (PARAGRAPHS, POSTSCRIPT),
         (TITLE, WORDS), (JSON, LOWER), (QUOTE, KEYWORDS), (LOWER, REPEAT), (NO_COMMA, LETTER),
         (BULLETS, TITLE), (PARAGRAPHS, KEYWORDS), (CAPITAL, POSTSCRIPT), (END, WORDS),
         (NO_COMMA, KEY_FREQ), (QUOTE, END)]
SINGLES_PER_TOPIC = 8
PAIRS_PER_TOPIC = 2
# Eval: the same types plus two unseen in training (forbidden words, highlighted sections).
EVAL_SPECS = [(s,) for s in SINGLES + [FORBIDDEN, HIGHLIGHT]] + [
    (LOWER, KEYWORDS), (CAPITAL, END), (BULLETS, NO_COMMA), (TITLE, PARAGRAPHS), (QUOTE, WORDS),
    (POSTSCRIPT, LOWER), (HIGHLIGHT, CAPITAL), (FORBIDDEN, TITLE), (REPEAT, CAPITAL)]
PROMPTS_PER_EVAL_TOPIC = 3


def count_words(text: str) -> int:
    """Words as lm-eval counts them (nltk RegexpTokenizer(r"\\w+"))."""
    return len(re.findall(r"\w+", text))


def chunks(items: list, n: int) -> list[list]:
    """`items` cut into `n` consecutive, nearly equal parts."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def shape_kwargs(iid: str, keywords: list[str], rng: random.Random) -> dict:
    """Arguments chosen before writing the response (they shape it)."""
    if iid == BULLETS:
        return {"num_bullets": rng.randint(2, 4)}
    if iid == PARAGRAPHS:
        return {"num_paragraphs": rng.randint(2, 3)}
    if iid == END:
        return {"end_phrase": rng.choice(END_PHRASES)}
    if iid == POSTSCRIPT:
        return {"postscript_marker": rng.choice(PS_MARKERS)}
    if iid == KEYWORDS:
        return {"keywords": list(keywords)}
    return {}


def measured_kwargs(iid: str, text: str, keywords: list[str], rng: random.Random) -> dict:
    """Arguments read off the finished response, so it satisfies them."""
    if iid == WORDS:
        n = count_words(text)
        if rng.random() < 0.5:
            return {"num_words": (n // 10 + 1 + rng.randint(0, 2)) * 10, "relation": "less than"}
        return {"num_words": max(10, (n // 10 - rng.randint(0, 1)) * 10), "relation": "at least"}
    if iid == LETTER:
        counts = {c: text.lower().count(c) for c in "aeinorst"}
        letter = rng.choice(sorted(c for c, k in counts.items() if k >= 3))
        k = counts[letter]
        if rng.random() < 0.5:
            return {"letter": letter, "let_frequency": k + rng.randint(1, 5), "let_relation": "less than"}
        return {"letter": letter, "let_frequency": rng.randint(max(1, k // 2), k), "let_relation": "at least"}
    if iid == KEY_FREQ:
        word = max(keywords, key=lambda w: (len(re.findall(w, text, flags=re.I)), w))
        k = len(re.findall(word, text, flags=re.I))
        if k < 2 or rng.random() < 0.5:  # "at least 1 times" would teach nothing
            return {"keyword": word, "frequency": k + rng.randint(1, 3), "relation": "less than"}
        return {"keyword": word, "frequency": k, "relation": "at least"}
    return {}


def render(topic: tuple, ids: tuple, kw: dict, repeat_text: str, rng: random.Random) -> str:
    """A response that follows every instruction in `ids` (structure, then wrappers, then case)."""
    name, title, _, _, facts = topic
    if JSON in ids:
        body = json.dumps({"topic": title, "facts": facts[:4]}, indent=2)
        body = f"```json\n{body}\n```" if rng.random() < 0.5 else body
    elif BULLETS in ids:
        body = "\n".join(f"* {s}" for s in facts[:kw[BULLETS]["num_bullets"]])
    elif PARAGRAPHS in ids:
        body = "\n\n***\n\n".join(" ".join(c) for c in chunks(facts, kw[PARAGRAPHS]["num_paragraphs"]))
    else:
        body = " ".join(facts)
    if TITLE in ids:
        body = f"<<{title}>>\n\n{body}"
    if END in ids:
        body += ("\n\n" if BULLETS in ids else " ") + kw[END]["end_phrase"]
    if POSTSCRIPT in ids:
        marker = kw[POSTSCRIPT]["postscript_marker"].rstrip(".") + "."
        body += f"\n\n{marker} " + rng.choice(PS_LINES).format(name=name)
    if REPEAT in ids:
        body = f"{repeat_text}\n\n{body}"
    if LOWER in ids:
        body = body.lower()
    if CAPITAL in ids:
        body = body.upper()
    if QUOTE in ids:
        body = f'"{body}"'
    return body


def describe(iid: str, kwargs: dict, rng: random.Random) -> str:
    """One phrasing of the instruction, filled with its kwargs."""
    fields = dict(kwargs)
    for i, w in enumerate(kwargs.get("keywords", [])):
        fields[f"kw{i}"] = w
    for i, w in enumerate(kwargs.get("forbidden_words", [])):
        fields[f"fw{i}"] = w
    return rng.choice(PHRASES[iid]).format(**fields)


def prompt_text(request: str, ids: tuple, kwargs: list[dict], rng: random.Random) -> tuple[str, str]:
    """(full prompt, the part to repeat): request + constraint phrases; the repeat phrase goes last
    and, as in IFEval, the request to repeat is everything before it."""
    parts = [request] + [describe(i, k, rng) for i, k in zip(ids, kwargs) if i != REPEAT]
    # a phrase ending in a bare marker ("... starting with P.P.S") gets a full stop before the next
    head = " ".join(p + "." if p[-1].isalnum() and n < len(parts) - 1 else p for n, p in enumerate(parts))
    if REPEAT not in ids:
        return head, head
    return f"{head} {rng.choice(PHRASES[REPEAT])}", head


def train_row(topic: tuple, ids: tuple, use_input: bool, rng: random.Random) -> dict:
    name, _, request, keywords, facts = topic
    if use_input:
        request = "Using the notes below, " + request[0].lower() + request[1:]
    kw = {i: shape_kwargs(i, keywords, rng) for i in ids}
    # The repeat text depends on the phrases of the other instructions, which may depend on
    # measured kwargs; measured and repeat never share a row, so one pass is enough.
    assert not (REPEAT in ids and {WORDS, LETTER, KEY_FREQ} & set(ids))
    if REPEAT in ids:
        _, repeat_text = prompt_text(request, ids, [kw[i] for i in ids], rng)
    else:
        repeat_text = ""
    output = render(topic, ids, kw, repeat_text, rng)
    for i in ids:
        kw[i].update(measured_kwargs(i, output, keywords, rng))
    if REPEAT in ids:
        kw[REPEAT] = {"prompt_to_repeat": repeat_text}
        instruction = f"{repeat_text} {rng.choice(PHRASES[REPEAT])}"
    else:
        instruction, _ = prompt_text(request, ids, [kw[i] for i in ids], rng)
    return {"instruction": instruction, "input": " ".join(facts) if use_input else "", "output": output,
            "instruction_id_list": list(ids), "kwargs": [kw[i] for i in ids], "topic": name}


def train_rows(rng: random.Random) -> list[dict]:
    rows = []
    for t, topic in enumerate(TRAIN_TOPICS):
        specs = [(SINGLES[(t * SINGLES_PER_TOPIC + j) % len(SINGLES)],) for j in range(SINGLES_PER_TOPIC)]
        specs += [PAIRS[(t * PAIRS_PER_TOPIC + j) % len(PAIRS)] for j in range(PAIRS_PER_TOPIC)]
        for j, ids in enumerate(specs):
            use_input = (t + j) % 6 == 0 and REPEAT not in ids  # some rows carry their notes as input
            rows.append(train_row(topic, ids, use_input, rng))
    return rows


def eval_kwargs(iid: str, keywords: list[str], avoid: list[str], rng: random.Random) -> dict:
    """IFEval-style arguments for a held-out prompt (no response to measure)."""
    if iid == WORDS:
        return rng.choice([{"num_words": rng.choice([30, 40, 50]), "relation": "at least"},
                           {"num_words": rng.choice([60, 80, 100]), "relation": "less than"}])
    if iid == LETTER:
        return {"letter": rng.choice("aeinorst"), "let_frequency": rng.randint(3, 8), "let_relation": "at least"}
    if iid == KEY_FREQ:
        return {"keyword": keywords[0], "frequency": rng.randint(2, 3), "relation": "at least"}
    if iid == FORBIDDEN:
        return {"forbidden_words": list(avoid)}
    if iid == HIGHLIGHT:
        return {"num_highlights": rng.randint(1, 3)}
    return shape_kwargs(iid, keywords, rng)


def eval_rows(rng: random.Random) -> list[dict]:
    rows = []
    for t, (_, request, keywords, avoid) in enumerate(EVAL_TOPICS):
        for j in range(PROMPTS_PER_EVAL_TOPIC):
            ids = EVAL_SPECS[(t * PROMPTS_PER_EVAL_TOPIC + j) % len(EVAL_SPECS)]
            kwargs = [eval_kwargs(i, keywords, avoid, rng) for i in ids]
            prompt, head = prompt_text(request, ids, kwargs, rng)
            kwargs = [{"prompt_to_repeat": head} if i == REPEAT else k for i, k in zip(ids, kwargs)]
            rows.append({"key": 1000 + len(rows), "prompt": prompt, "instruction_id_list": list(ids),
                         "kwargs": kwargs})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_data(out_dir: str | Path) -> list[Path]:
    """Write train.jsonl and ifeval_prompts.jsonl into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    paths = [out_dir / TRAIN_FILE, out_dir / PROMPTS_FILE]
    write_jsonl(train_rows(rng), paths[0])
    write_jsonl(eval_rows(rng), paths[1])
    return paths


if __name__ == "__main__":
    for p in make_data(Path(__file__).resolve().parent):
        print(p)
