//! Unit tests of `tarjama::text` on the seed article and on small cases.

use tarjama::text::*;

const SEED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-article-ar.txt"
));

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn norm(s: &str) -> String {
    normalize(s, &NormalizeOptions::default()).text
}

fn texts(doc: &Document) -> Vec<&str> {
    doc.segments.iter().map(|s| s.text.as_str()).collect()
}

fn seg(s: &str) -> Vec<String> {
    let doc = segment(&norm(s), 512, &words);
    doc.segments.into_iter().map(|s| s.text).collect()
}

fn substr(s: &str, (a, b): (usize, usize)) -> String {
    s.chars().skip(a).take(b - a).collect()
}

/// (paragraph, sentence) of the seed article, normalised, in order.
const SEED_SEGMENTS: &[(usize, &str)] = &[
    (0, "روسيا: إنشاء وحدة أمن إلكتروني مشتركة مع أميركا يستغرق وقتاً"),
    (1, "وكالة نادي المراسلين الشباب للأنباء"),
    (2, "رمز الخبر: 13325"),
    (3, "تأريخ النشر: 20:35 - الاثنين 10 يوليو 2017"),
    (4, "قالت إحدى أعضاء الوفد الروسي لمؤتمر قمة دول إن ما دار من نقاش بين الرئيس فلاديمير بوتين و دونالد ترامب لمسألة الأمن الإلكتروني، لا يعني أن الدولتين ستبدآن التعاون في هذه القضية."),
    (5, "طهران- وكالة نادي المراسلين الشباب للأنباء- قالت إحدى أعضاء الوفد الروسي لمؤتمر قمة دول العشرين في مؤتمر صحافي سفتلانا لوكاش اليوم، إن «ما دار من نقاش بين الرئيس فلاديمير بوتين ونظيره الأميركي دونالد ترامب لمسألة الأمن الإلكتروني، لا يعني أن الدولتين ستبدآن التعاون في هذه القضية في القريب العاجل»، مضيفة «ربما ترامب ليس مستعداً بعد في هذه المرحلة»."),
    (6, "وتراجع ترامب عن سعيه لإنشاء وحدة للأمن الإلكتروني مع روسيا وقال في تغريدة على «تويتر»، إنه «لا يعتقد أنها يمكن أن تتحقق»، بعد ساعات فقط من تشجيعه إنشاء تلك الوحدة عقب محادثاته مع نظيره الروسي."),
    (7, "وأشارت لوكاش إلى أن بوتين وترامب ناقشا مسألة الأمن الإلكتروني على مدى 40 دقيقة في هامبورغ."),
    (7, "ولم تستبعد أن تشكل في النهاية هيئة للأمن الإلكتروني سواء كانت ثنائية تضم الولايات المتحدة وروسيا فقط أم تحت رعاية الأمم المتحدة."),
    (8, "وقال ترامب في تغريدات على «تويتر» أمس، عقب أول اجتماع له مع بوتين، إن «الوقت حان للعمل بشكل بناء مع موسكو»، مضيفاً «أنا وبوتين بحثنا تشكيل وحدة منيعة لأمن الإنترنت لتفادي اختراق الانتخابات والعديد من الأمور السلبية الأخرى»."),
    (9, "وأفاد ترامب بأنه أثار مزاعم التدخل الروسي في الانتخابات الرئاسية الأميركية لعام 2016 مع بوتين."),
    (9, "وقال «ضغطت بقوة مرتين على الرئيس بوتين في شأن التدخل الروسي في انتخاباتنا."),
    (9, "نفى ذلك بشدة."),
    (9, "أعطيت رأيي بالفعل»."),
    (10, "وتابع «تفاوضنا على اتفاق لوقف إطلاق النار في أجزاء من سورية من شأنه أن ينقذ الأرواح."),
    (10, "حان الوقت الآن للمضي قدماً في العمل على نحو بناء مع روسيا!»."),
    (10, "وسارع السناتور الجمهوري ماركو روبيو من فلوريدا إلى توجيه انتقاد على «تويتر»، قائلاً إن بوتين ليس شريكاً جديراً بالثقة."),
    (11, "وأضاف أن الدخول في شراكة مع بوتين في شأن «وحدة لأمن الإنترنت» مثل مشاركة الرئيس السوري بشار الأسد في «وحدة للأسلحة الكيماوية»."),
    (12, "وتبحث التحقيقات التي يجريها المستشار الخاص روبرت مولر والعديد من لجان الكونغرس الأميركي ما إذا كانت روسيا تدخلت في الانتخابات وتواطأت مع حملة ترامب."),
    (13, "ويقول أعضاء في الكونغرس ومسؤولون في الاستخبارات إن هذه التحقيقات تركز بشكل كامل تقريباً على تحركات موسكو، ولم تظهر أدلة تشير إلى تورط دول أخرى."),
    (13, "وتنفي موسكو أي تدخل وقال ترامب إن حملته لم تتواطأ مع روسيا."),
    (14, "انتهي/"),
    (15, "رأيكم"),
];

#[test]
fn seed_segments_exactly() {
    let n = normalize(SEED, &NormalizeOptions::default());
    let doc = segment(&n.text, 512, &words);
    let got: Vec<(usize, &str)> = doc
        .segments
        .iter()
        .map(|s| (s.paragraph, s.text.as_str()))
        .collect();
    assert_eq!(got, SEED_SEGMENTS);
    assert_eq!(doc.paragraphs.len(), 16);
    assert!(doc.segments.iter().all(|s| s.split == SplitKind::None));
    let tiled: String = doc
        .segments
        .iter()
        .map(|s| substr(&n.text, (s.start, s.end)))
        .collect();
    assert_eq!(tiled, n.text);
}

#[test]
fn seed_title_marker_and_widget_are_own_segments() {
    let doc = segment(&norm(SEED), 512, &words);
    let t = texts(&doc);
    assert_eq!(
        t[0],
        "روسيا: إنشاء وحدة أمن إلكتروني مشتركة مع أميركا يستغرق وقتاً"
    );
    assert_eq!(t[t.len() - 2], "انتهي/");
    assert_eq!(t[t.len() - 1], "رأيكم");
    let last = doc.paragraphs.len() - 1;
    assert_eq!(doc.paragraphs[last].segments, t.len() - 1..t.len());
}

#[test]
fn seed_persian_digits_and_letters_are_normalised() {
    let n = norm(SEED);
    assert!(n.contains("رمز الخبر: 13325"));
    assert!(n.contains("تأريخ النشر: 20:35 - الاثنين 10 يوليو 2017"));
    assert!(n.ends_with("انتهي/\n\nرأيكم"));
    let bad = |c: char| matches!(c, '\u{06F0}'..='\u{06F9}' | 'ی' | 'ک' | '\u{A0}');
    assert!(!n.chars().any(bad), "{n}");
    assert!(!n.contains("  ") && !n.contains("\n\n\n") && !n.contains(" \n"));
}

#[test]
fn seed_original_spans_map_back() {
    let n = normalize(SEED, &NormalizeOptions::default());
    let doc = segment(&n.text, 512, &words);
    for s in &doc.segments {
        let span = n.segment_span(s);
        assert_eq!(norm(&substr(SEED, span)), s.text, "{span:?}");
    }
    assert_eq!(n.segment_span(&doc.segments[0]), (0, 60));
    let code = n.segment_span(&doc.segments[2]);
    assert_eq!(substr(SEED, code), "رمز الخبر: ۱۳۳۲۵");
}

#[test]
fn seed_quote_closing_after_stop_stays() {
    let t = seg(SEED);
    assert!(t
        .iter()
        .any(|s| s == "حان الوقت الآن للمضي قدماً في العمل على نحو بناء مع روسيا!»."));
    assert!(t.iter().any(|s| s == "أعطيت رأيي بالفعل»."));
}

#[test]
fn seed_long_sentence_split_at_comma_loses_nothing() {
    let n = norm(SEED);
    let doc = segment(&n, 512, &words);
    let long = &doc.segments[5];
    assert!(long.text.starts_with("طهران-"));
    let budget = 25;
    let sub = segment(&long.text, budget, &words);
    assert!(sub.segments.len() > 1);
    for s in &sub.segments {
        assert_eq!(s.split, SplitKind::AtClause, "{:?}", s.text);
        assert!(words(&s.text) <= budget);
    }
    assert!(sub.segments[0].text.ends_with("اليوم،"));
    assert_eq!(texts(&sub).join(" "), long.text);
    let tiled: String = sub
        .segments
        .iter()
        .map(|s| substr(&long.text, (s.start, s.end)))
        .collect();
    assert_eq!(tiled, long.text);
}

#[test]
fn seed_whole_article_under_tight_budget() {
    let n = norm(SEED);
    let doc = segment(&n, 12, &words);
    for s in &doc.segments {
        assert!(words(&s.text) <= 12, "{:?}", s);
    }
    assert!(doc
        .segments
        .iter()
        .any(|s| s.split == SplitKind::AtWhitespace));
    assert_eq!(doc.paragraphs.len(), 16);
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(flat(&texts(&doc).join(" ")), flat(&n));
}

#[test]
fn seed_boilerplate_dropped_only_when_asked() {
    let opts = NormalizeOptions {
        drop_boilerplate: true,
        ..Default::default()
    };
    let n = normalize(SEED, &opts);
    assert!(n.text.ends_with("إن حملته لم تتواطأ مع روسيا."));
    assert_eq!(segment(&n.text, 512, &words).paragraphs.len(), 14);
    assert!(norm(SEED).ends_with("رأيكم"));
}

#[test]
fn seed_is_arabic() {
    assert_eq!(detect_language(SEED), DetectedLanguage::Arabic);
    assert_eq!(detect_script(SEED), Script::Arabic);
}

// ---- normalisation ----

#[test]
fn tatweel_digits_letters() {
    assert_eq!(norm("كتـــاب ٣٤٥ ۶۷۸"), "كتاب 345 678");
    assert_eq!(norm("ی ې ک ڪ ە ۀ ہ ھ"), "ي ي ك ك ه ه ه ه");
    assert_eq!(norm("٣٫٥ و١٬٠٠٠"), "3.5 و1,000");
}

#[test]
fn presentation_forms_nfkc_only_there() {
    assert_eq!(norm("ﻻ ﷲ ﺑﻴﺖ"), "لا الله بيت");
    // Outside the Arabic ranges nothing is compatibility-mapped.
    assert_eq!(norm("ﬁ x² Ａ"), "ﬁ x² Ａ");
}

#[test]
fn controls_removed() {
    let s = "\u{FEFF}\u{200F}قال\u{200B} \u{202B}نعم\u{202C}\u{2067}ok\u{2069}\u{200C}ها\u{061C}\u{200E}";
    assert_eq!(norm(s), "قال نعمokها");
    assert_eq!(norm("a\u{0}b\u{7F}c"), "abc");
    // ZWJ survives only inside emoji sequences.
    assert_eq!(norm("👨\u{200D}👩 ل\u{200D}ا"), "👨\u{200D}👩 لا");
}

#[test]
fn whitespace_collapsed_keeping_paragraphs() {
    assert_eq!(
        norm("  a \u{A0}b  \r\n  c\r\n\r\n\r\n\n d \u{2028}e  "),
        "a b\nc\n\nd\ne"
    );
    assert_eq!(norm(" \n\t "), "");
    assert_eq!(norm(""), "");
}

/// A tab or three or more spaces between words (headlines on one line) are kept as they
/// are; at the edges of a line they go like any whitespace.
#[test]
fn headline_runs_are_kept() {
    assert_eq!(norm("a \t\u{A0} b"), "a \t\u{A0} b");
    assert_eq!(norm("a   b\tc  d"), "a   b\tc d");
    assert_eq!(norm("\t a   \n   b\t"), "a\nb");
    let once = norm("x     y\t\tz");
    assert_eq!(norm(&once), once);
}

#[test]
fn diacritics_kept_by_default_stripped_on_request() {
    let s = "كَتَبَ الوَلَدُ";
    assert_eq!(norm(s), s);
    let opts = NormalizeOptions {
        strip_diacritics: true,
        ..Default::default()
    };
    assert_eq!(normalize(s, &opts).text, "كتب الولد");
    // FE71 (tatweel with fathatan, presentation form) → fathatan, then stripped.
    assert_eq!(normalize("ﹱ", &opts).text, "");
}

#[test]
fn boilerplate_variants() {
    let opts = NormalizeOptions {
        drop_boilerplate: true,
        ..Default::default()
    };
    let drop = |s: &str| normalize(s, &opts).text;
    assert_eq!(drop("خبر.\n(انتهى)\n\nرأیکم\n"), "خبر.");
    assert_eq!(drop("خبر.\n/انتهى/"), "خبر.");
    // Only whole trailing lines go; a marker inside text stays.
    assert_eq!(drop("انتهى الاجتماع.\nخبر"), "انتهى الاجتماع.\nخبر");
    assert_eq!(drop("انتهى/"), "");
}

#[test]
fn original_span_through_expansions_and_removals() {
    let raw = "\u{200F}ﻻ  بأس\u{200B}.";
    let n = normalize(raw, &NormalizeOptions::default());
    assert_eq!(n.text, "لا بأس.");
    assert_eq!(n.offsets(), &[1, 1, 2, 4, 5, 6, 8]);
    assert_eq!(n.original_span(0, 7), (1, 9));
    assert_eq!(n.original_span(0, 1), (1, 2));
    assert_eq!(n.original_span(3, 6), (4, 7));
    assert_eq!(n.original_span(7, 7), (9, 9));
    assert_eq!(n.original_span(5, 99), (6, 9));
    assert_eq!(n.original_len_chars(), 9);
}

// ---- segmentation ----

#[test]
fn numbers_and_abbreviations_do_not_split() {
    let s =
        "بلغ النمو 3.5 في المئة عند 20:35. وقال د. أحمد إن U.S. policy changed. Mr. Smith agreed!";
    assert_eq!(
        seg(s),
        [
            "بلغ النمو 3.5 في المئة عند 20:35.",
            "وقال د. أحمد إن U.S. policy changed.",
            "Mr. Smith agreed!"
        ]
    );
    assert_eq!(
        seg("زاره أ. محمد و م. علي. ثم غادر"),
        ["زاره أ. محمد و م. علي.", "ثم غادر"]
    );
    assert_eq!(seg("1. البند الأول. والثاني"), ["1. البند الأول.", "والثاني"]);
}

#[test]
fn all_terminators() {
    assert_eq!(
        seg("أين؟ هنا! حقا? نعم… لا... ok."),
        ["أين؟", "هنا!", "حقا?", "نعم…", "لا...", "ok."]
    );
}

#[test]
fn quotes_after_stop_stay_with_sentence() {
    assert_eq!(
        seg("قال «انتهى الأمر.» ثم غادر."),
        ["قال «انتهى الأمر.»", "ثم غادر."]
    );
    assert_eq!(
        seg("سأل «هل انتهى؟»، ثم غادر."),
        ["سأل «هل انتهى؟»،", "ثم غادر."]
    );
    assert_eq!(
        seg("He said \"stop!\". Then left."),
        ["He said \"stop!\".", "Then left."]
    );
    // A quote that is not closed right after the stop does not keep it.
    assert_eq!(seg("قال «نعم. لا»"), ["قال «نعم.", "لا»"]);
}

#[test]
fn lines_are_paragraphs_and_blank_lines_are_covered() {
    let text = norm("العنوان\n\nالفقرة الأولى. جملة ثانية.\nسطر ثالث");
    let doc = segment(&text, 512, &words);
    assert_eq!(
        texts(&doc),
        ["العنوان", "الفقرة الأولى.", "جملة ثانية.", "سطر ثالث"]
    );
    let paras: Vec<_> = doc.paragraphs.iter().map(|p| p.segments.clone()).collect();
    assert_eq!(paras, [0..1, 1..3, 3..4]);
    assert_eq!(
        substr(&text, (doc.segments[0].start, doc.segments[0].end)),
        "العنوان\n\n"
    );
    assert_eq!(doc.segments[3].end, text.chars().count());
}

#[test]
fn clause_then_whitespace_then_hard() {
    let s = "واحد اثنان، ثلاثة أربعة خمسة ستة سبعة؛ ثمانية";
    let doc = segment(s, 3, &words);
    let got: Vec<_> = doc
        .segments
        .iter()
        .map(|s| (s.text.as_str(), s.split))
        .collect();
    assert_eq!(
        got,
        [
            ("واحد اثنان،", SplitKind::AtClause),
            ("ثلاثة أربعة خمسة", SplitKind::AtWhitespace),
            ("ستة سبعة؛", SplitKind::AtWhitespace),
            ("ثمانية", SplitKind::AtClause),
        ]
    );
    let chars = |s: &str| s.chars().count();
    let doc = segment("abcdefgh ij", 3, &chars);
    let got: Vec<_> = doc
        .segments
        .iter()
        .map(|s| (s.text.as_str(), s.split))
        .collect();
    assert_eq!(
        got,
        [
            ("abc", SplitKind::Hard),
            ("def", SplitKind::Hard),
            ("gh", SplitKind::Hard),
            ("ij", SplitKind::AtWhitespace),
        ]
    );
    // A zero budget still terminates: one grapheme per piece.
    assert_eq!(segment("ab c", 0, &chars).segments.len(), 3);
    // Hard cuts keep a letter with its diacritics and emoji sequences whole.
    let t = |d: Document| d.segments.into_iter().map(|s| s.text).collect::<Vec<_>>();
    assert_eq!(t(segment("كَتَبَ", 3, &chars)), ["كَ", "تَ", "بَ"]);
    assert_eq!(
        t(segment("a👨\u{200D}👩b", 1, &chars)),
        ["a", "👨\u{200D}👩", "b"]
    );
}

#[test]
fn empty_and_blank_input() {
    assert_eq!(segment("", 512, &words), Document::default());
    assert_eq!(segment(" \n\n ", 512, &words), Document::default());
    let doc = segment("  x  ", 512, &words);
    assert_eq!((doc.segments[0].start, doc.segments[0].end), (0, 5));
    assert_eq!(doc.segments[0].text, "x");
}

#[test]
fn reassemble_paragraphs() {
    let doc = segment("أ. ب. ج\nد\n\nه", 512, &words);
    assert_eq!(texts(&doc), ["أ. ب. ج", "د", "ه"]);
    let doc2 = segment("جملة. أخرى\nد\n\nه", 512, &words);
    let tr: Vec<String> = ["One.", " Two ", "Three", "Four"]
        .map(String::from)
        .to_vec();
    assert_eq!(reassemble(&doc2, &tr), "One. Two\n\nThree\n\nFour");
    // Missing or blank translations are skipped without panicking.
    assert_eq!(reassemble(&doc2, &tr[..1]), "One.");
    assert_eq!(reassemble(&doc2, &["".into(), "".into(), "x".into()]), "x");
}

// ---- language ----

#[test]
fn language_detection() {
    use DetectedLanguage::*;
    assert_eq!(detect_language("مرحبا بالعالم"), Arabic);
    assert_eq!(detect_language("Hello world, this is English."), English);
    assert_eq!(detect_language("Hello world مرحبا"), Mixed);
    assert_eq!(detect_language("Putin met Trump in Hamburg (بوتين)"), Mixed);
    assert_eq!(detect_language("قال Trump إن"), Mixed);
    assert_eq!(detect_language("12345 ... !!"), Unknown);
    assert_eq!(detect_language(""), Unknown);
    assert_eq!(detect_language("Привет мир"), Unknown);
    assert_eq!(detect_language("ﻻ"), Arabic);
    assert_eq!(detect_script("Hello world مرحبا"), Script::Mixed);
    assert_eq!(detect_script("Привет"), Script::Unknown);
    assert_eq!(Mixed.code(), "ar");
    assert_eq!(English.code(), "en");
    assert!(Mixed.needs_translation() && !English.needs_translation());
}

/// Tokens like a character-level tokenizer: one per char, plus an end-of-sequence token.
fn chars_and_eos(s: &str) -> usize {
    s.chars().count() + 1
}

#[test]
fn a_letter_with_hundreds_of_marks_is_cut_between_code_points() {
    // One grapheme cluster of 601 code points: over any budget as a whole.
    let text = format!("ا{}", "\u{64B}".repeat(600));
    let doc = segment(&text, 128, &chars_and_eos);
    assert!(doc.segments.len() >= 5, "{}", doc.segments.len());
    for s in &doc.segments {
        assert_eq!(s.split, SplitKind::Hard);
        assert!(
            chars_and_eos(&s.text) <= 128,
            "{} chars",
            s.text.chars().count()
        );
    }
    assert_eq!(texts(&doc).concat(), text);
}

/// Characters handed to the tokenizer while segmenting `text`, per character of `text`.
fn tokenised_per_char(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> f64 {
    let seen = std::cell::Cell::new(0usize);
    let counting = |s: &str| {
        seen.set(seen.get() + s.chars().count());
        count(s)
    };
    let doc = segment(text, budget, &counting);
    assert!(doc.segments.len() > 1);
    seen.get() as f64 / text.chars().count() as f64
}

#[test]
fn long_sentences_are_tokenised_a_bounded_number_of_times() {
    // Re-counting a growing prefix for every packed unit is quadratic: hundreds of
    // tokenisations per character here. Packing must stay within a small constant.
    let words_only = "كلمة ".repeat(20_000);
    let ratio = tokenised_per_char(&words_only, 500, &words);
    assert!(ratio < 8.0, "words: {ratio:.1} tokenised chars per char");
    let clauses = "كلمة أخرى هنا، ".repeat(5_000);
    let ratio = tokenised_per_char(&clauses, 500, &words);
    assert!(ratio < 8.0, "clauses: {ratio:.1} tokenised chars per char");
    // No whitespace at all: cut between graphemes.
    let one_word = "ب".repeat(30_000);
    let ratio = tokenised_per_char(&one_word, 100, &|s: &str| s.chars().count() / 3 + 1);
    assert!(
        ratio < 32.0,
        "one word: {ratio:.1} tokenised chars per char"
    );
}

/// Scraped copy that lost the space after a full stop: a terminator directly followed by an
/// Arabic letter ends the sentence; numbers and one-letter abbreviations stay whole.
#[test]
fn glued_sentences_are_split() {
    assert_eq!(
        seg("ارتفع النفط في حال اندلعت الحرب.وارتفعت العقود الآجلة للبرميل.ولامس الخامان القمة"),
        [
            "ارتفع النفط في حال اندلعت الحرب.",
            "وارتفعت العقود الآجلة للبرميل.",
            "ولامس الخامان القمة"
        ]
    );
    assert_eq!(
        seg("هل انتهى؟نعم!وماذا بعد"),
        ["هل انتهى؟", "نعم!", "وماذا بعد"]
    );
    // Decimals with a point or a comma, and initials, are not boundaries.
    assert_eq!(
        seg("سجل 3.03 دولار و117,74 نقطة"),
        ["سجل 3.03 دولار و117,74 نقطة"]
    );
    assert_eq!(seg("قال د.محمد وأ.د.علي ذلك"), ["قال د.محمد وأ.د.علي ذلك"]);
    // Latin after a stop is left as it was (`example.com`, `U.S.A`).
    assert_eq!(
        seg("زار الموقع example.com اليوم"),
        ["زار الموقع example.com اليوم"]
    );
}

/// Headlines separated by a tab or three or more spaces on one line are separate segments,
/// never merged (even under a budget that would hold both), and reassembly puts the same run
/// back between their translations.
#[test]
fn headline_runs_separate_segments_and_come_back() {
    let text = norm("منح 152 رخصة جديدة   ارتفاع أسعار الذهب\tافتتاح معرض الكتاب");
    let doc = segment(&text, 512, &words);
    assert_eq!(
        texts(&doc),
        [
            "منح 152 رخصة جديدة",
            "ارتفاع أسعار الذهب",
            "افتتاح معرض الكتاب"
        ]
    );
    assert_eq!(doc.paragraphs.len(), 1);
    let joiners: Vec<&str> = doc.segments.iter().map(|s| s.joiner.as_str()).collect();
    assert_eq!(joiners, ["   ", "\t", " "]);
    // Spans still tile the text.
    let tiled: String = doc
        .segments
        .iter()
        .map(|s| substr(&text, (s.start, s.end)))
        .collect();
    assert_eq!(tiled, text);
    let english = [
        "152 new licences granted",
        "Gold prices rise",
        "Book fair opens",
    ]
    .map(String::from);
    assert_eq!(
        reassemble(&doc, &english),
        "152 new licences granted   Gold prices rise\tBook fair opens"
    );
    // A budget cut inside one headline never reaches into the next one.
    let doc = segment(&text, 2, &words);
    assert!(doc
        .segments
        .iter()
        .all(|s| !s.text.contains('\t') && !s.text.contains("   ")));
    assert_eq!(doc.segments[0].text, "منح 152");
    assert_eq!(doc.segments[1].text, "رخصة جديدة");
}

#[test]
fn arabic_letters_decide_what_the_model_sees() {
    assert!(has_arabic_letter("قال G20"));
    assert!(!has_arabic_letter("The G20 summit opened. 3.5%"));
    assert!(!has_arabic_letter("١٢٣ ٤٥"));
    // Diacritics and tatweel alone are not letters.
    assert!(!has_arabic_letter("\u{64B}\u{640}"));
}

#[test]
fn protected_spans_are_found() {
    let found = |s: &str| -> Vec<String> {
        find_protected(s)
            .into_iter()
            .map(|r| s[r].to_string())
            .collect()
    };
    assert_eq!(
        found("قالت قمة G20 إن سعر USD118 (للبرميل) ارتفع، وفق Donald Trump."),
        ["G20", "USD118", "Donald Trump"]
    );
    assert_eq!(
        found("راجع https://example.com/a?b=1. أو اكتب إلى news@example.org و@AlArabiya_Eng #Gaza"),
        [
            "https://example.com/a?b=1",
            "news@example.org",
            "@AlArabiya_Eng #Gaza"
        ]
    );
    // Digits, Arabic and punctuation alone are translated.
    assert!(found("ارتفع بنسبة 3.5% في 2026، «وفق» المصدر.").is_empty());
    // A Latin code glued to an Arabic prefix: only the code.
    assert_eq!(found("بـUSD118 وبG20"), ["USD118", "G20"]);
}

#[test]
fn protected_spans_leave_the_input_and_come_back_where_placed() {
    let s = "قال G20 إن الطريق https://a.b/c طويل";
    let p = Protected::new(s, &find_protected(s));
    assert_eq!(p.masked, "قال إن الطريق طويل");
    let at: Vec<usize> = p.spans.iter().map(|x| x.words_before).collect();
    assert_eq!(at, [1, 3]);
    // "He said the road is long": source word 0 (قال) ↔ "said", word 2 (الطريق) ↔ "road".
    let place = |w: usize| match w {
        1 => Some(Place::After(1)),
        3 => Some(Place::After(3)),
        _ => None,
    };
    assert_eq!(
        p.restore("He said the road is long", place),
        "He said G20 the road https://a.b/c is long"
    );
    // Nothing aligned: after everything (or before, for a span that opened the sentence).
    let q = Protected::new("G20 قال ذلك BBC", &find_protected("G20 قال ذلك BBC"));
    assert_eq!(q.restore("He said so", |_| None), "G20 He said so BBC");
    assert_eq!(q.restore("", |_| None), "G20 BBC");
}
