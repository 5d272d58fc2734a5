"""General English word lists: BM25's stopwords (worker/pipeline/sparse.py) and the cache
verifier's function words, negations, numbers, opposites and answer-type nouns (web/verify.py).

General English, not taken from any evaluation set; all in one style, a frozenset of a
whitespace-separated block (or a tuple of pairs).
"""

from __future__ import annotations

# fmt: off
STOPWORDS = frozenset("""
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not of off on once only or
    other our ours ourselves out over own s same she should so some such t than that the
    their theirs them themselves then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves
""".split())  # noqa: SIM905
# fmt: on
"""Function words that carry no topic, so BM25 weighs what does."""

# fmt: off
FUNCTION_WORDS = frozenset("""
    a an the this that these those it its is are was were be been being am do does did done
    doing have has had having of in on at by for with about as into onto upon from to and or
    but if then so than too very can could will would shall should may might must there here
    their they them he him his she her we us our you your i me my mine what which who whom
    whose when where why how whether also just only such some any each every all both either
    own same other another one's s t let lets get got gets getting make made called call name
    named term known use used using usually generally commonly typically often mainly
    primarily kind kinds type types sort sorts many much
""".split())  # noqa: SIM905
# fmt: on
"""Words that carry the question's frame, not its subject; they may differ freely."""

# fmt: off
NEGATIONS = frozenset("""
    not no never none nobody nothing neither nor without cannot non
""".split())  # noqa: SIM905
# fmt: on
NEGATING_PREFIXES = ("non", "un", "in", "im", "il", "ir", "dis", "anti")

# fmt: off
NUMBER_WORDS = frozenset("""
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
    ninety hundred thousand million billion first second third fourth fifth sixth seventh
    eighth ninth tenth last half quarter double triple once twice
""".split())  # noqa: SIM905
# fmt: on

# fmt: off
OPPOSITES: tuple[tuple[str, str], ...] = (
    ("before", "after"), ("above", "below"), ("over", "under"), ("inside", "outside"),
    ("in", "out"), ("up", "down"), ("upper", "lower"), ("top", "bottom"), ("to", "from"),
    ("into", "out"), ("north", "south"), ("east", "west"), ("left", "right"), ("front", "back"),
    ("early", "late"), ("earlier", "later"), ("first", "last"), ("begin", "end"),
    ("start", "finish"), ("open", "close"), ("more", "less"), ("more", "fewer"), ("most", "least"),
    ("increase", "decrease"), ("rise", "fall"), ("high", "low"), ("big", "small"),
    ("large", "small"), ("long", "short"), ("old", "new"), ("old", "young"), ("easy", "hard"),
    ("easy", "difficult"), ("good", "bad"), ("best", "worst"), ("better", "worse"),
    ("strong", "weak"), ("fast", "slow"), ("hot", "cold"), ("rich", "poor"), ("true", "false"),
    ("right", "wrong"), ("win", "lose"), ("won", "lost"), ("buy", "sell"), ("bought", "sold"),
    ("give", "take"), ("gave", "took"), ("lend", "borrow"), ("send", "receive"),
    ("import", "export"), ("accept", "reject"), ("allow", "forbid"), ("add", "remove"),
    ("include", "exclude"), ("join", "leave"), ("enter", "exit"), ("arrive", "depart"),
    ("attack", "defend"), ("ally", "enemy"), ("friend", "enemy"), ("friend", "foe"),
    ("love", "hate"), ("success", "failure"), ("succeed", "fail"), ("pass", "fail"),
    ("victory", "defeat"), ("gain", "loss"), ("profit", "loss"), ("maximum", "minimum"),
    ("max", "min"), ("positive", "negative"), ("male", "female"), ("man", "woman"),
    ("birth", "death"), ("born", "died"), ("live", "die"), ("public", "private"),
    ("internal", "external"), ("input", "output"), ("northern", "southern"),
    ("eastern", "western"), ("modern", "ancient"), ("local", "global"), ("domestic", "foreign"),
    ("majority", "minority"), ("permit", "ban"), ("legal", "illegal"), ("pro", "anti"),
    ("same", "different"), ("similar", "different"), ("always", "never"), ("all", "none"),
    ("with", "without"), ("for", "against"), ("support", "oppose"), ("cause", "effect"),
    ("question", "answer"), ("ask", "answer"), ("teacher", "student"), ("parent", "child"),
    ("create", "destroy"), ("build", "demolish"), ("raise", "lower"),
)
# fmt: on
"""Common English opposites; a pair split across the two questions is a different question."""

# fmt: off
TIME_NOUNS = frozenset("""
    year years century centuries date decade decades era month day period
""".split())  # noqa: SIM905
# fmt: on
# fmt: off
PLACE_NOUNS = frozenset("""
    place places location locations
""".split())  # noqa: SIM905
# fmt: on
# fmt: off
QUANTITY_ADVERBS = frozenset("""
    many much long far often frequent frequently old large big
""".split())  # noqa: SIM905
# fmt: on
