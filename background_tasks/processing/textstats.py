"""Cheap text statistics shared by the pipeline's metadata and the analysis tasks."""

from __future__ import annotations

import re

from background_tasks.processing.language import best_language

_WORD = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
_SPACE = re.compile(r"\s")
_COUNT_SLICE = 1 << 16
LANGUAGE_SAMPLE_CHARS = 5_000
#: Below this many words langdetect guesses more than it detects (and costs as much as a whole small file).
LANGUAGE_MIN_WORDS = 20


def _words(text_value: str) -> list[str]:
    return text_value.split()


#: Words too common to say what a text is about (English and German, 3+ letters): left out of keywords.
STOPWORDS = frozenset(
    _words(
        """
    about above after again against all also although among and another any are aren around because been before
    being below between both but can cannot could couldn did didn does doesn doing don down during each either
    else even ever every few for from further get gets got had hadn has hasn have haven having her here hers
    herself him himself his how however into isn its itself just least less let like made make many may might
    more most much must mustn myself neither nor not now off once one only onto other others our ours ourselves
    out over own per rather said same say says see seen shall shan she should shouldn since some still such
    than that the their theirs them themselves then there therefore these they this those though through thus
    too under until upon use used using very via was wasn way well were weren what whatever when where whether
    which while who whom whose why will with within without won would wouldn yet you your yours yourself
    yourselves also etc new two three first second
    aber alle allem allen aller alles als also am an ander andere anderem anderen anderer anderes anderm andern
    anders auch auf aus bei bin bis bist da damit dann der den des dem die das dass daß derselbe derselben
    denselben desselben demselben dieselbe dieselben dasselbe dazu dein deine deinem deinen deiner deines denn
    derer dessen dich dir du dies diese diesem diesen dieser dieses doch dort durch ein eine einem einen einer
    eines einig einige einigem einigen einiger einiges einmal er ihn ihm es etwas euer eure eurem euren eurer
    eures für gegen gewesen hab habe haben hat hatte hatten hier hin hinter ich mich mir ihr ihre ihrem ihren
    ihrer ihres euch im in indem ins ist jede jedem jeden jeder jedes jene jenem jenen jener jenes jetzt kann
    kein keine keinem keinen keiner keines können könnte machen man manche manchem manchen mancher manches mein
    meine meinem meinen meiner meines mit muss musste nach nicht nichts noch nun nur ob oder ohne sehr sein
    seine seinem seinen seiner seines selbst sich sie ihnen sind so solche solchem solchen solcher solches soll
    sollte sondern sonst über um und uns unsere unserem unseren unser unseres unter viel vom von vor während war
    waren warst was weg weil weiter welche welchem welchen welcher welches wenn werde werden wie wieder will wir
    wird wirst wo wollen wollte würde würden zu zum zur zwar zwischen sowie bzw beim
    """
    )
)

#: Short words as common (English, German, French, Spanish, Greek): with ``STOPWORDS``, a query of only
#: these says nothing a search could rank by.
SHORT_STOPWORDS = frozenset(
    _words(
        """
    a an as at be by do go he if in is it me my no of on or so to up us we am
    ab da du er es im ob um zu
    au ce de du en et il je la le les ne on ou qu se un une des est pas par pour que qui sur
    al el en es la las lo los por que se un una del con
    ο η το οι τα του της των τον την και να με σε για από είναι
    """
    )
)


def word_count(text: str) -> int:
    """Words in ``text``, counted by the regex engine's own loop (``subn``) a slice at a time.

    Slices end at whitespace, which no word contains, so none is counted twice; a slice at a
    time, because ``subn`` keeps every piece between two words until it joins them (hundreds of
    MB for a large table).
    """
    count, start, size = 0, 0, len(text)
    while start < size:
        end = start + _COUNT_SLICE
        if end < size:
            space = _SPACE.search(text, end)
            end = space.start() if space else size
        count += _WORD.subn("", text[start:end])[1]
        start = end + 1
    return count


def load_language_profiles() -> bool:
    """Load langdetect's 55 profiles now (about 0.1 s), and numpy for the detection's arithmetic; True if available.

    Called in the worker's main process before the pool forks, so pool
    processes share them instead of each loading them on its first document.
    """
    try:
        import numpy  # noqa: F401
        from langdetect import detector_factory
    except ImportError:
        return False
    detector_factory.init_factory()
    return True


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the main language, or None when the text is too short or unclear.

    langdetect is seeded so the same text always gives the same answer; ``language.best_language``
    gives its answer in a fraction of its time.
    """
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if word_count(sample[:2000]) < LANGUAGE_MIN_WORDS:
        return None
    try:
        best = best_language(sample)
    except ImportError:
        return None
    if best is None:
        return None
    lang, prob = best
    return lang if prob >= 0.6 else None
