/* detect.c: the validated personal-data detectors of mask.h ("detection").
 *
 * One forward pass over the text, written by hand (no regex library): a regex engine cannot
 * check a GB 11643 or GB 32100 check character, a Luhn sum or a calendar date, and a loose
 * regex such as \d{17}[\dXx] flags every 18-digit order number. The pass works like this:
 *
 *   - A 256-entry table (per detector: it depends on the enabled types) says which bytes can
 *     start a finding: ASCII letters and digits, '+', the email local-part specials _ % -, and
 *     the bytes >= 0x80 only when CN_NAME is asked for. Every other byte (spaces, punctuation,
 *     Chinese text) is skipped in a tight loop.
 *   - At a start byte the maximal ASCII alphanumeric run is measured once (length and which of
 *     digit/upper/lower it contains), and only the matchers that fit that shape run; the scan
 *     then resumes after the run, because a finding can never start inside an alphanumeric run
 *     (it would be glued to the byte before it).
 *   - Each matcher (m_*) answers "the longest match of type T starting exactly at p", checks its
 *     own boundaries and is also what mask_validate runs on a whole value, so a finding always
 *     validates on its own bytes and the two can never disagree.
 *
 * Boundaries: a finding is never preceded or followed by an ASCII letter or digit; any byte
 * >= 0x80 (Chinese text, full-width ，。：) is a boundary. An 18-digit ID inside a 20-digit run
 * is not an ID. Grouped forms (138 0013 8000, 6222 0212 3456 7890 123) must be the whole chain of
 * groups: "1234 6222 0212 3456 7890" is not a card. One exception to "glued": a JSON escape
 * (\n \r \t \b \f \uXXXX) before a value is a boundary, because JSON bodies are often scanned
 * as text and json.dumps writes 电话13800138000 as "\u7535\u8bdd13800138000".
 * Overlaps: at one position the longest match, then the lower mask_type; the leftmost finding
 * wins over a later overlapping one.
 *
 * What each detector checks (and what it deliberately does not):
 *   CN_RID18   6-digit region: province 11-15 21-23 31-37 41-46 50-54 61-65 71, city digits 01-70
 *              or 90 (省直辖县级), any county digits; or exactly 810000/820000/830000 (HK, Macao,
 *              Taiwan residence permits). No GB/T 2260 county list: codes of counties that were
 *              abolished or renamed stay on valid cards for life, so a current list would
 *              reject real IDs and a historical one is large and still incomplete. Birth date
 *              yyyymmdd real (leap years: 19000229 no, 20000229 yes), >= 1900, not after
 *              `today`; then 3 sequence digits; GB 11643 ISO 7064 MOD 11-2 check character
 *              (X or x).
 *   CN_RID15   same region rule, yymmdd read as 19yy and a real date, 3 digits.
 *   CN_MOBILE  1 + a 3-digit segment from the list (built-in: 130-139 145-149 150-153 155-159
 *              162 165-167 170-178 180-189 190-199, or opts.mobile_prefixes) + 8 digits; bare,
 *              3-4-4 with single spaces or single hyphens (consistent); optionally prefixed by
 *              "+86", "0086" (each optionally followed by one space or hyphen) or "86-". The
 *              finding includes the prefix.
 *   BANK_CARD  15-19 digits, Luhn, issuer: UnionPay 62 and 81 (16-19 digits), Visa 4 (16, 19),
 *              Mastercard 51-55 and 2221-2720 (16), Amex 34/37 (15), JCB 3528-3589 (16-19),
 *              Diners 36 and 300-305 (16-19; the 14-digit Diners cards are outside 15-19). The
 *              old Chinese domestic 9-prefixed BINs are not included: we could not confirm
 *              their ranges and Luhn use. Grouped: 4-4-4-4, 4-4-4-4-3 and 4-6-5 (Amex), spaces
 *              or hyphens, consistent.
 *   USCC       18 characters of 0-9 A-H J-N P-R T U W-Y; first character a GB 32100
 *              registration department (1-9, A, N, Y: the standard's table, wider than the
 *              common 1/5/9/Y), second a category digit 1-9, then 6 region digits, then the
 *              9-character GB 11714 organisation code with its own check character (weights
 *              3 7 9 10 5 8 4 2, C = 11 - sum mod 11, 10 -> X, 11 -> 0), then the GB 32100 check
 *              character (weights 3^i mod 31, C = 31 - sum mod 31, 31 -> 0).
 *   CN_PASSPORT  E or G + 8 digits, E + [A-HJ-NP-Z] + 7 digits (ordinary passports), D, S or P
 *              + 7 digits (diplomatic, service, public affairs).
 *   HKMO_PERMIT  C + 8 digits, C + [A-HJ-NP-Z] + 7 digits, W + 8 digits (old booklet).
 *   HRP        H or M + 8 digits, or + 10 digits (old form).
 *              Letters are uppercase only; these short forms collide with codes in text, so
 *              the boundary rule matters most for them (S1234567 inside "ABS1234567" is not one).
 *   EMAIL      a practical RFC 5321 subset: local part of [A-Za-z0-9_%+-] atoms separated by
 *              single dots (no leading, trailing or doubled dot), at most 64 bytes, not glued
 *              to a local-part character or '@' before it; domain of at least two labels of
 *              [A-Za-z0-9-] (no leading or trailing hyphen, at most 63 bytes each, 253 in all),
 *              the last one (the TLD) 2+ letters; not followed by '_' or '@'. Quoted local
 *              parts, IP-literal domains and IDN (non-ASCII) addresses are not detected.
 *   IPV4       four decimal octets 0-255 without leading zeros, not preceded by "digit." and
 *              not followed by ".digit" (version strings like 1.2.3.4.5 are not addresses).
 *   CN_PLATE   GA 36: one of 京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼,
 *              a city letter A-Z except I and O, an optional middle dot U+00B7, then 5 of
 *              [A-HJ-NP-Z0-9] (ordinary), or 4 of them and one of 学警港澳挂领, or 6 for
 *              new-energy plates: [DF][A-HJ-NP-Z0-9] + 4 digits (small) or 5 digits + [DF]
 *              (large).
 *   CN_NAME    WEAK: a maximal run of 2-4 CJK ideographs standing alone (bounded by non-CJK
 *              characters: ASCII, punctuation, full-width punctuation), starting with a
 *              compound surname (欧阳 司马 ...) followed by 1-2 characters, or with one of ~250
 *              common single-character surnames followed by 1-2 characters. Many ordinary
 *              two-character words start with a surname character (时间, 高兴, 文件), so it is
 *              only run when asked for (tagged columns and fields, explicit opts.types), and a
 *              name inside running Chinese text ("患者张三于") is not found.
 *
 * Full-width digits (０-９) are not detected. Offsets are bytes; texts of 4 GiB or more are
 * scanned up to the first 4 GiB - 1 bytes (mask_finding offsets are 32-bit).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/mask.h"

/* ---- types and names ----------------------------------------------------------------------- */

static const char *const type_names[MASK_T_COUNT] = {
    "NONE",        "CN_RID18", "CN_RID15", "CN_MOBILE", "BANK_CARD", "USCC",    "CN_PASSPORT",
    "HKMO_PERMIT", "HRP",      "EMAIL",    "IPV4",      "CN_PLATE",  "CN_NAME",
};

const char *
mask_type_name(mask_type t)
{
    if ((unsigned) t >= (unsigned) MASK_T_COUNT) {
        return NULL;
    }
    return type_names[t];
}

int
mask_type_parse(const char *name, size_t len, mask_type *out)
{
    if (name == NULL || out == NULL) {
        return DBAO_EINVAL;
    }
    for (int i = 0; i < MASK_T_COUNT; i++) {
        if (strlen(type_names[i]) == len && memcmp(type_names[i], name, len) == 0) {
            *out = (mask_type) i;
            return 0;
        }
    }
    return DBAO_EFORMAT;
}

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int
mask_types_parse(const char *list, uint32_t *set, dbao_err *err)
{
    if (list == NULL || set == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "mask types: null argument");
    }
    uint32_t s = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma != NULL ? comma : p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && is_space(*a)) {
            a++;
        }
        while (b > a && is_space(b[-1])) {
            b--;
        }
        mask_type t;
        if (a == b) {
            return dbao_err_set(err, DBAO_EFORMAT, "mask types: empty entry in the type list");
        }
        if (mask_type_parse(a, (size_t) (b - a), &t) != 0 || t == MASK_T_NONE) {
            return dbao_err_set(err, DBAO_EFORMAT, "mask types: unknown type '%.*s'",
                                (int) ((b - a) > 40 ? 40 : (b - a)), a);
        }
        s |= MASK_TYPE_BIT(t);
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *set = s;
    return 0;
}

/* ---- the detector -------------------------------------------------------------------------- */

#define CJK_LO   0x3400u /* CJK Extension A .. the end of the unified block */
#define CJK_HI   0x9FFFu
#define CJK_BITS (CJK_HI - CJK_LO + 1u)

struct mask_detector {
    uint32_t types;
    int32_t today;                 /* 0: computed when a birth date needs it */
    uint8_t start[256];            /* bytes that can start a finding with these types */
    uint8_t seg[100];              /* mobile segment 1xy allowed: seg[xy] */
    uint8_t surname[CJK_BITS / 8]; /* single-character surnames, bit per code point */
};

/* The built-in current mobile segments (MIIT allocations in use, 2024). */
static const char builtin_segments[] = "130-139,145-149,150-153,155-159,162,165-167,170-178,"
                                       "180-189,190-199";

/* The most common single-character surnames (the 2020 census top 100 and ~150 more). */
static const char surnames_utf8[] =
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺"
    "顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿"
    "关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华"
    "喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦卢麦褚娄窦戚岑景党宫费卜冷晏席卫米"
    "柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝";

/* Compound surnames, each two characters. */
static const char compound_utf8[] = "欧阳司马诸葛上官东方皇甫尉迟公孙慕容长孙宇文司徒夏侯轩辕令狐"
                                    "端木独孤南宫西门百里呼延钟离澹台公冶宗政濮阳太史申屠闻人"
                                    "万俟赫连拓跋第五";

static const char provinces_utf8[] =
    "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

static const char plate_suffix_utf8[] = "学警港澳挂领";

static inline bool
is_digit(uint8_t c)
{
    return (unsigned) (c - '0') < 10u;
}

static inline bool
is_upper(uint8_t c)
{
    return (unsigned) (c - 'A') < 26u;
}

static inline bool
is_alpha(uint8_t c)
{
    return (unsigned) ((c | 0x20) - 'a') < 26u;
}

static inline bool
is_alnum(uint8_t c)
{
    return is_digit(c) || is_alpha(c);
}

/* [A-HJ-NP-Z]: an uppercase letter other than I and O. */
static inline bool
is_upper_noio(uint8_t c)
{
    return is_upper(c) && c != 'I' && c != 'O';
}

static inline bool
is_local(uint8_t c) /* an email local-part character other than '.' */
{
    return is_alnum(c) || c == '_' || c == '%' || c == '+' || c == '-';
}

static inline bool
is_hex(uint8_t c)
{
    return is_digit(c) || (unsigned) ((c | 0x20) - 'a') < 6u;
}

/* escape_len: the length of the JSON (or C) escape whose letter is at t[p] after a backslash:
 * 1 for \n \r \t \b \f, 5 for \uXXXX, 0 otherwise. */
static inline size_t
escape_len(const uint8_t *t, size_t len, size_t p)
{
    if (p == 0 || t[p - 1] != '\\' || p >= len) {
        return 0;
    }
    uint8_t c = t[p];
    if (c == 'n' || c == 'r' || c == 't' || c == 'b' || c == 'f') {
        return 1;
    }
    if (c == 'u' && p + 5 <= len && is_hex(t[p + 1]) && is_hex(t[p + 2]) && is_hex(t[p + 3]) &&
        is_hex(t[p + 4])) {
        return 5;
    }
    return 0;
}

/* escape_before: the bytes before p end a JSON escape (\n ... or \uXXXX): a boundary, so that
 * "\u7535\u8bdd13800138000" (Python's json.dumps of 电话13800138000) is still scanned. */
static inline bool
escape_before(const uint8_t *t, size_t p)
{
    return (p >= 2 && escape_len(t, p, p - 1) == 1) || (p >= 6 && escape_len(t, p, p - 5) == 5);
}

static inline bool
glued_before(const uint8_t *t, size_t p)
{
    return p > 0 && is_alnum(t[p - 1]) && !escape_before(t, p);
}

static inline bool
glued_after(const uint8_t *t, size_t len, size_t e)
{
    return e < len && is_alnum(t[e]);
}

static inline size_t
digit_run(const uint8_t *t, size_t len, size_t p)
{
    while (p < len && is_digit(t[p])) {
        p++;
    }
    return p;
}

static inline size_t
alnum_run(const uint8_t *t, size_t len, size_t p)
{
    while (p < len && is_alnum(t[p])) {
        p++;
    }
    return p;
}

static bool
all_digits(const uint8_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(t[i])) {
            return false;
        }
    }
    return true;
}

/* utf8_cp3 decodes a 3-byte UTF-8 sequence at t[p] (the whole BMP range above U+07FF); 0 when
 * it is not one. */
static inline uint32_t
utf8_cp3(const uint8_t *t, size_t len, size_t p)
{
    if (p + 3 > len || (t[p] & 0xF0) != 0xE0 || (t[p + 1] & 0xC0) != 0x80 ||
        (t[p + 2] & 0xC0) != 0x80) {
        return 0;
    }
    uint32_t cp = ((uint32_t) (t[p] & 0x0F) << 12) | ((uint32_t) (t[p + 1] & 0x3F) << 6) |
                  (uint32_t) (t[p + 2] & 0x3F);
    return cp >= 0x800 ? cp : 0;
}

static inline bool
is_cjk(uint32_t cp)
{
    return cp >= CJK_LO && cp <= CJK_HI;
}

/* in_list: whether code point cp is one of the characters of the UTF-8 string `list`. */
static bool
in_list(const char *list, uint32_t cp)
{
    const uint8_t *l = (const uint8_t *) list;
    size_t n = strlen(list);
    for (size_t i = 0; i + 3 <= n; i += 3) {
        if (utf8_cp3(l, n, i) == cp) {
            return true;
        }
    }
    return false;
}

static int
parse_segments(uint8_t seg[100], const char *s, dbao_err *err)
{
    memset(seg, 0, 100);
    const char *p = s;
    int any = 0;
    for (;;) {
        while (is_space(*p)) {
            p++;
        }
        if (!(p[0] == '1' && is_digit((uint8_t) p[1]) && is_digit((uint8_t) p[2]))) {
            return dbao_err_set(err, DBAO_EINVAL,
                                "mask detector: mobile_prefixes wants 3-digit segments 1xy");
        }
        int a = (p[1] - '0') * 10 + (p[2] - '0');
        int b = a;
        p += 3;
        if (*p == '-') { /* a range "130-139" (used by the built-in list) */
            p++;
            if (!(p[0] == '1' && is_digit((uint8_t) p[1]) && is_digit((uint8_t) p[2]))) {
                return dbao_err_set(err, DBAO_EINVAL,
                                    "mask detector: mobile_prefixes has a bad range");
            }
            b = (p[1] - '0') * 10 + (p[2] - '0');
            p += 3;
            if (b < a) {
                return dbao_err_set(err, DBAO_EINVAL,
                                    "mask detector: mobile_prefixes has a bad range");
            }
        }
        for (int x = a; x <= b; x++) {
            seg[x] = 1;
            any = 1;
        }
        while (is_space(*p)) {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        if (*p != ',') {
            return dbao_err_set(err, DBAO_EINVAL,
                                "mask detector: mobile_prefixes is not a comma-separated list");
        }
        p++;
    }
    return any ? 0 : dbao_err_set(err, DBAO_EINVAL, "mask detector: mobile_prefixes is empty");
}

static bool date_ok(int32_t today, int y, int m, int d);

int
mask_detector_new(mask_detector **out, const mask_detect_opts *opts, dbao_err *err)
{
    if (out == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "mask detector: null argument");
    }
    *out = NULL;
    uint32_t types = opts != NULL && opts->types != 0 ? opts->types : MASK_TYPES_DEFAULT;
    if ((types & ~(uint32_t) MASK_TYPES_ALL) != 0) {
        return dbao_err_set(err, DBAO_EINVAL, "mask detector: unknown type bits 0x%x",
                            (unsigned) (types & ~(uint32_t) MASK_TYPES_ALL));
    }
    int32_t today = opts != NULL ? opts->today : 0;
    if (today != 0 && (today < 19000101 || today > 99991231 ||
                       !date_ok(today, today / 10000, today / 100 % 100, today % 100))) {
        return dbao_err_set(err, DBAO_EINVAL, "mask detector: today is not a yyyymmdd date");
    }
    mask_detector *d = dbao_calloc(1, sizeof(*d));
    if (d == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "mask detector: out of memory");
    }
    d->types = types;
    d->today = today;
    const char *segs =
        opts != NULL && opts->mobile_prefixes != NULL ? opts->mobile_prefixes : builtin_segments;
    int rc = parse_segments(d->seg, segs, err);
    if (rc != 0) {
        dbao_free(d);
        return rc;
    }
    const uint8_t *s = (const uint8_t *) surnames_utf8;
    size_t n = strlen(surnames_utf8);
    for (size_t i = 0; i + 3 <= n; i += 3) {
        uint32_t cp = utf8_cp3(s, n, i);
        if (is_cjk(cp)) {
            d->surname[(cp - CJK_LO) >> 3] |= (uint8_t) (1u << ((cp - CJK_LO) & 7));
        }
    }
    uint32_t alnum_types = types & ~MASK_TYPE_BIT(MASK_T_CN_NAME);
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        if (alnum_types != 0 && is_alnum((uint8_t) c)) {
            v = 1;
        }
        if (c == '+' && (types & (MASK_TYPE_BIT(MASK_T_CN_MOBILE) | MASK_TYPE_BIT(MASK_T_EMAIL)))) {
            v = 1;
        }
        if ((c == '_' || c == '%' || c == '-') && (types & MASK_TYPE_BIT(MASK_T_EMAIL))) {
            v = 1;
        }
        if (c >= 0x80 && (types & MASK_TYPE_BIT(MASK_T_CN_NAME))) {
            v = 1;
        }
        d->start[c] = v;
    }
    *out = d;
    return 0;
}

void
mask_detector_free(mask_detector *d)
{
    dbao_free(d);
}

/* ---- dates --------------------------------------------------------------------------------- */

static int32_t
today_utc8(void)
{
    time_t now = time(NULL) + 8 * 3600;
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL) {
        return 99991231;
    }
    return (int32_t) ((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

/* date_ok: y-m-d is a real Gregorian date from 1900 on and not after `today` (0: today). */
static bool
date_ok(int32_t today, int y, int m, int d)
{
    static const uint8_t mdays[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || m < 1 || m > 12 || d < 1 || d > mdays[m]) {
        return false;
    }
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return false;
    }
    int32_t ymd = (int32_t) (y * 10000 + m * 100 + d);
    if (today == 0) {
        today = today_utc8();
    }
    return ymd <= today;
}

static inline int
d2(const uint8_t *t)
{
    return (t[0] - '0') * 10 + (t[1] - '0');
}

/* region_ok: the 6 region digits of a resident ID (see the top of the file). */
static bool
region_ok(const uint8_t *r)
{
    int pp = d2(r), cc = d2(r + 2), xx = d2(r + 4);
    if (pp == 81 || pp == 82 || pp == 83) {
        return cc == 0 && xx == 0;
    }
    bool prov = (pp >= 11 && pp <= 15) || (pp >= 21 && pp <= 23) || (pp >= 31 && pp <= 37) ||
                (pp >= 41 && pp <= 46) || (pp >= 50 && pp <= 54) || (pp >= 61 && pp <= 65) ||
                pp == 71;
    if (!prov) {
        return false;
    }
    return (cc >= 1 && cc <= 70) || cc == 90;
}

/* ---- matchers: each returns the end of the longest match of its type at p, or 0 ----------- */

static size_t
m_rid18(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    static const uint8_t w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char ck[] = "10X98765432";
    if (glued_before(t, p) || p + 18 > len || glued_after(t, len, p + 18) ||
        !all_digits(t + p, 17)) {
        return 0;
    }
    uint8_t last = t[p + 17];
    if (!is_digit(last) && last != 'X' && last != 'x') {
        return 0;
    }
    const uint8_t *s = t + p;
    if (!region_ok(s)) {
        return 0;
    }
    int y = d2(s + 6) * 100 + d2(s + 8);
    if (!date_ok(d->today, y, d2(s + 10), d2(s + 12))) {
        return 0;
    }
    unsigned sum = 0;
    for (int i = 0; i < 17; i++) {
        sum += (unsigned) (s[i] - '0') * w[i];
    }
    char want = ck[sum % 11];
    if (last == 'x') {
        last = 'X';
    }
    return (char) last == want ? p + 18 : 0;
}

static size_t
m_rid15(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p) || p + 15 > len || glued_after(t, len, p + 15) ||
        !all_digits(t + p, 15)) {
        return 0;
    }
    const uint8_t *s = t + p;
    if (!region_ok(s) || !date_ok(d->today, 1900 + d2(s + 6), d2(s + 8), d2(s + 10))) {
        return 0;
    }
    return p + 15;
}

/* chain: the digit groups at p joined by `sep` (a sep counts only when a digit follows).
 * Stores up to `max` group lengths and returns the number of groups (max + 1 if more). */
static size_t
chain(const uint8_t *t, size_t len, size_t p, uint8_t sep, size_t *glen, size_t max, size_t *end)
{
    size_t n = 0;
    for (;;) {
        size_t e = digit_run(t, len, p);
        if (n == max) {
            return max + 1;
        }
        glen[n++] = e - p;
        *end = e;
        if (e + 1 < len && t[e] == sep && is_digit(t[e + 1])) {
            p = e + 1;
            continue;
        }
        return n;
    }
}

static inline bool
seg_ok(const mask_detector *d, const uint8_t *s)
{
    return s[0] == '1' && d->seg[(s[1] - '0') * 10 + (s[2] - '0')];
}

/* m_mobile_body: 11 digits or 3-4-4 at p (the byte before p is not checked). */
static size_t
m_mobile_body(const mask_detector *d, const uint8_t *t, size_t len, size_t p, bool first)
{
    if (p >= len || t[p] != '1') {
        return 0;
    }
    size_t e = digit_run(t, len, p);
    if (e - p == 11) {
        return glued_after(t, len, e) || !seg_ok(d, t + p) ? 0 : e;
    }
    if (e - p != 3 || e + 1 >= len || (t[e] != ' ' && t[e] != '-')) {
        return 0;
    }
    uint8_t sep = t[e];
    if (first && p >= 2 && t[p - 1] == sep && is_digit(t[p - 2])) {
        return 0; /* the tail of a longer group chain */
    }
    size_t g[4], end;
    if (chain(t, len, p, sep, g, 3, &end) != 3 || g[1] != 4 || g[2] != 4 ||
        glued_after(t, len, end) || !seg_ok(d, t + p)) {
        return 0;
    }
    return end;
}

static size_t
m_mobile(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p) || p >= len) {
        return 0;
    }
    size_t q = 0;
    if (t[p] == '+' && p + 3 <= len && t[p + 1] == '8' && t[p + 2] == '6') {
        q = p + 3;
    } else if (p + 4 <= len && memcmp(t + p, "0086", 4) == 0) {
        q = p + 4;
    } else if (p + 3 <= len && memcmp(t + p, "86-", 3) == 0) {
        return m_mobile_body(d, t, len, p + 3, false);
    } else {
        return m_mobile_body(d, t, len, p, true);
    }
    if (q < len && (t[q] == ' ' || t[q] == '-')) {
        q++;
    }
    return m_mobile_body(d, t, len, q, false);
}

static bool
luhn(const uint8_t *dg, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v = dg[n - 1 - i];
        if (i & 1) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }
        sum += v;
    }
    return sum % 10 == 0;
}

static bool
issuer_ok(const uint8_t *dg, size_t n)
{
    int a1 = dg[0], a2 = a1 * 10 + dg[1], a3 = a2 * 10 + dg[2], a4 = a3 * 10 + dg[3];
    if (a2 == 62 || a2 == 81) {
        return n >= 16 && n <= 19;
    }
    if (a1 == 4) {
        return n == 16 || n == 19;
    }
    if ((a2 >= 51 && a2 <= 55) || (a4 >= 2221 && a4 <= 2720)) {
        return n == 16;
    }
    if (a2 == 34 || a2 == 37) {
        return n == 15;
    }
    if ((a4 >= 3528 && a4 <= 3589) || a2 == 36 || (a3 >= 300 && a3 <= 305)) {
        return n >= 16 && n <= 19;
    }
    return false;
}

static size_t
m_bank(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    (void) d;
    if (glued_before(t, p)) {
        return 0;
    }
    uint8_t dg[19];
    size_t e = digit_run(t, len, p);
    size_t n = e - p;
    if (n >= 15 && n <= 19) {
        if (glued_after(t, len, e)) {
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            dg[i] = (uint8_t) (t[p + i] - '0');
        }
        return issuer_ok(dg, n) && luhn(dg, n) ? e : 0;
    }
    if (n != 4 || e + 1 >= len || (t[e] != ' ' && t[e] != '-')) {
        return 0;
    }
    uint8_t sep = t[e];
    if (p >= 2 && t[p - 1] == sep && is_digit(t[p - 2])) {
        return 0;
    }
    size_t g[5], end;
    size_t ng = chain(t, len, p, sep, g, 5, &end);
    bool ok = (ng == 4 && g[1] == 4 && g[2] == 4 && g[3] == 4) ||
              (ng == 5 && g[1] == 4 && g[2] == 4 && g[3] == 4 && g[4] == 3) ||
              (ng == 3 && g[1] == 6 && g[2] == 5);
    if (!ok || glued_after(t, len, end)) {
        return 0;
    }
    n = 0;
    for (size_t i = p; i < end; i++) {
        if (is_digit(t[i])) {
            dg[n++] = (uint8_t) (t[i] - '0');
        }
    }
    if (ng == 3 && !(dg[0] == 3 && (dg[1] == 4 || dg[1] == 7))) {
        return 0; /* 4-6-5 is the Amex grouping only */
    }
    return issuer_ok(dg, n) && luhn(dg, n) ? end : 0;
}

/* GB 32100 character values: 0-9 A-H J-N P-R T U W-Y -> 0..30, -1 otherwise. */
static int
uscc_val(uint8_t c)
{
    static const int8_t letters[26] = {
        10, 11, 12, 13, 14, 15, 16, 17, -1, 18, 19, 20, 21, /* A-M (no I) */
        22, -1, 23, 24, 25, -1, 26, 27, -1, 28, 29, 30, -1, /* N-Z (no O S V Z) */
    };
    if (is_digit(c)) {
        return c - '0';
    }
    if (is_upper(c)) {
        return letters[c - 'A'];
    }
    return -1;
}

static size_t
m_uscc(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    static const uint8_t w[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
    static const uint8_t wo[8] = {3, 7, 9, 10, 5, 8, 4, 2};
    static const char chars[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    (void) d;
    if (glued_before(t, p) || p + 18 > len || glued_after(t, len, p + 18)) {
        return 0;
    }
    const uint8_t *s = t + p;
    if (!((s[0] >= '1' && s[0] <= '9') || s[0] == 'A' || s[0] == 'N' || s[0] == 'Y') ||
        !(s[1] >= '1' && s[1] <= '9') || !all_digits(s + 2, 6)) {
        return 0;
    }
    unsigned sum = 0;
    for (int i = 0; i < 17; i++) {
        int v = uscc_val(s[i]);
        if (v < 0) {
            return 0;
        }
        sum += (unsigned) v * w[i];
    }
    if (s[17] != (uint8_t) chars[(31 - sum % 31) % 31]) {
        return 0;
    }
    /* the embedded GB 11714 organisation code: s[8..16) and its check character s[16] */
    unsigned so = 0;
    for (int i = 0; i < 8; i++) {
        uint8_t c = s[8 + i];
        so += (unsigned) (is_digit(c) ? c - '0' : c - 'A' + 10) * wo[i];
    }
    unsigned co = 11 - so % 11;
    uint8_t want = co == 10 ? 'X' : co == 11 ? '0' : (uint8_t) ('0' + co);
    return s[16] == want ? p + 18 : 0;
}

/* m_letter_id: passports and permits (one letter, maybe a second, then digits). */
static size_t
m_letter_id(mask_type type, const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p) || p >= len) {
        return 0;
    }
    size_t e = alnum_run(t, len, p), n = e - p;
    const uint8_t *s = t + p;
    uint8_t c = s[0];
    bool ok = false;
    switch (type) {
    case MASK_T_CN_PASSPORT:
        ok = (n == 9 && (c == 'E' || c == 'G') && all_digits(s + 1, 8)) ||
             (n == 9 && c == 'E' && is_upper_noio(s[1]) && all_digits(s + 2, 7)) ||
             (n == 8 && (c == 'D' || c == 'S' || c == 'P') && all_digits(s + 1, 7));
        break;
    case MASK_T_HKMO_PERMIT:
        ok = (n == 9 && (c == 'C' || c == 'W') && all_digits(s + 1, 8)) ||
             (n == 9 && c == 'C' && is_upper_noio(s[1]) && all_digits(s + 2, 7));
        break;
    case MASK_T_HRP:
        ok = (n == 9 || n == 11) && (c == 'H' || c == 'M') && all_digits(s + 1, n - 1);
        break;
    default:
        break;
    }
    return ok ? e : 0;
}

/* m_email: see the top of the file; p must be a local-part start. */
static size_t
m_email(const uint8_t *t, size_t len, size_t p)
{
    if (p >= len || !is_local(t[p])) {
        return 0;
    }
    if (p > 0 && ((is_local(t[p - 1]) && !escape_before(t, p)) || t[p - 1] == '@' ||
                  (t[p - 1] == '.' && p >= 2 && is_local(t[p - 2])))) {
        return 0;
    }
    size_t q = p;
    bool dot = false;
    while (q < len && q - p <= 64) {
        uint8_t c = t[q];
        if (is_local(c)) {
            dot = false;
        } else if (c == '.') {
            if (dot) {
                return 0;
            }
            dot = true;
        } else {
            break;
        }
        q++;
    }
    if (q >= len || t[q] != '@' || dot || q - p > 64) {
        return 0;
    }
    size_t dom = q + 1, r = dom;
    int labels = 0;
    bool alpha = false;
    size_t last_len = 0;
    for (;;) {
        size_t s = r;
        alpha = true;
        while (r < len && (is_alnum(t[r]) || t[r] == '-')) {
            if (!is_alpha(t[r])) {
                alpha = false;
            }
            r++;
        }
        last_len = r - s;
        if (last_len == 0 || last_len > 63 || t[s] == '-' || t[r - 1] == '-' || r - dom > 253) {
            return 0;
        }
        labels++;
        if (r + 1 < len && t[r] == '.' && is_alnum(t[r + 1])) {
            r++;
            continue;
        }
        break;
    }
    if (labels < 2 || !alpha || last_len < 2 || (r < len && (t[r] == '_' || t[r] == '@'))) {
        return 0;
    }
    return r;
}

static size_t
ipv4_octet(const uint8_t *t, size_t len, size_t p)
{
    size_t e = digit_run(t, len, p), n = e - p;
    if (n == 0 || n > 3 || (n > 1 && t[p] == '0')) {
        return 0;
    }
    unsigned v = 0;
    for (size_t i = p; i < e; i++) {
        v = v * 10 + (unsigned) (t[i] - '0');
    }
    return v <= 255 ? e : 0;
}

static size_t
m_ipv4(const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p) || (p >= 2 && t[p - 1] == '.' && is_digit(t[p - 2]))) {
        return 0;
    }
    size_t q = p;
    for (int k = 0; k < 4; k++) {
        if (k > 0) {
            if (q >= len || t[q] != '.') {
                return 0;
            }
            q++;
        }
        q = ipv4_octet(t, len, q);
        if (q == 0) {
            return 0;
        }
    }
    if (glued_after(t, len, q) || (q + 1 < len && t[q] == '.' && is_digit(t[q + 1]))) {
        return 0;
    }
    return q;
}

static inline bool
plate_char(uint8_t c)
{
    return is_digit(c) || is_upper_noio(c);
}

/* m_plate: p is the province character. */
static size_t
m_plate(const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p)) {
        return 0;
    }
    uint32_t cp = utf8_cp3(t, len, p);
    if (cp == 0 || !in_list(provinces_utf8, cp)) {
        return 0;
    }
    size_t q = p + 3;
    if (q >= len || !is_upper_noio(t[q])) {
        return 0;
    }
    q++;
    if (q + 1 < len && t[q] == 0xC2 && t[q + 1] == 0xB7) { /* U+00B7 middle dot */
        q += 2;
    }
    size_t r = alnum_run(t, len, q), n = r - q;
    for (size_t i = q; i < r; i++) {
        if (!plate_char(t[i])) {
            return 0;
        }
    }
    const uint8_t *s = t + q;
    if (n == 5) {
        return r;
    }
    if (n == 6) {
        bool small = (s[0] == 'D' || s[0] == 'F') && all_digits(s + 2, 4);
        bool large = all_digits(s, 5) && (s[5] == 'D' || s[5] == 'F');
        return small || large ? r : 0;
    }
    if (n == 4) {
        uint32_t sc = utf8_cp3(t, len, r);
        if (sc != 0 && in_list(plate_suffix_utf8, sc) && !glued_after(t, len, r + 3)) {
            return r + 3;
        }
    }
    return 0;
}

static inline bool
surname1(const mask_detector *d, uint32_t cp)
{
    return is_cjk(cp) && (d->surname[(cp - CJK_LO) >> 3] >> ((cp - CJK_LO) & 7) & 1u);
}

static bool
surname2(uint32_t a, uint32_t b)
{
    const uint8_t *s = (const uint8_t *) compound_utf8;
    size_t n = strlen(compound_utf8);
    for (size_t i = 0; i + 6 <= n; i += 6) {
        if (utf8_cp3(s, n, i) == a && utf8_cp3(s, n, i + 3) == b) {
            return true;
        }
    }
    return false;
}

/* cjk_run_end: the end of the run of CJK ideographs at p, counting at most `max` + 1 of them
 * into cps; *count gets the number (max + 1 means "more"). */
static size_t
cjk_run(const uint8_t *t, size_t len, size_t p, uint32_t *cps, size_t max, size_t *count)
{
    size_t k = 0;
    for (;;) {
        uint32_t cp = utf8_cp3(t, len, p);
        if (!is_cjk(cp)) {
            break;
        }
        if (k <= max) {
            cps[k] = cp;
        }
        k++;
        p += 3;
    }
    *count = k;
    return p;
}

static size_t
m_name(const mask_detector *d, const uint8_t *t, size_t len, size_t p)
{
    if (glued_before(t, p) || (p >= 3 && is_cjk(utf8_cp3(t, len, p - 3)))) {
        return 0;
    }
    uint32_t cps[5];
    size_t k;
    size_t e = cjk_run(t, len, p, cps, 4, &k);
    if (k < 2 || k > 4 || glued_after(t, len, e)) {
        return 0;
    }
    if (k >= 3 && surname2(cps[0], cps[1])) {
        return e;
    }
    return k <= 3 && surname1(d, cps[0]) ? e : 0;
}

/* ---- the scan ------------------------------------------------------------------------------ */

typedef struct best {
    size_t start, end;
    mask_type type;
} best;

static inline void
consider(best *b, mask_type type, size_t end)
{
    if (end != 0 && (end > b->end || (end == b->end && type < b->type))) {
        b->end = end;
        b->type = type;
    }
}

#define HAS(d, t) (((d)->types & MASK_TYPE_BIT(t)) != 0)

enum { F_DIGIT = 1, F_UPPER = 2, F_LOWER = 4 };

/* F_* class of each byte (0: not an ASCII letter or digit), for the run loop. */
static const uint8_t alnum_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0,
    0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

size_t
mask_detect(const mask_detector *d, const char *text, size_t len, mask_finding *out, size_t cap)
{
    if (d == NULL || text == NULL) {
        return 0;
    }
    if (len > UINT32_MAX - 1) {
        len = UINT32_MAX - 1;
    }
    const uint8_t *t = (const uint8_t *) text;
    const uint8_t *start = d->start;
    const bool want_email = HAS(d, MASK_T_EMAIL);
    const bool want_plate = HAS(d, MASK_T_CN_PLATE);
    size_t i = 0, last_end = 0, count = 0;
    size_t at = 0; /* the next '@' at or after i (len: none), valid while at >= i */
    bool at_valid = false;

    while (i < len) {
        while (i < len && !start[t[i]]) {
            i++;
        }
        if (i >= len) {
            break;
        }
        uint8_t c = t[i];
        best b = {i, 0, MASK_T_COUNT};
        size_t next = i + 1;

        if (is_alnum(c)) {
            size_t esc = escape_len(t, len, i);
            if (esc != 0) { /* "\n138...", "\u8bdd138...": the value starts after it */
                i += esc;
                continue;
            }
            unsigned fl = 0, k;
            size_t e = i;
            while (e < len && (k = alnum_class[t[e]]) != 0) {
                fl |= k;
                e++;
            }
            size_t n = e - i;
            next = e;
            if (want_plate && is_upper_noio(c) && i >= last_end + 3 && t[i - 1] >= 0x80) {
                size_t pe = m_plate(t, len, i - 3);
                if (pe != 0) {
                    b.start = i - 3;
                    b.end = pe;
                    b.type = MASK_T_CN_PLATE;
                    goto emit;
                }
            }
            if (fl == F_DIGIT) {
                if (n == 18) {
                    if (HAS(d, MASK_T_CN_RID18)) {
                        consider(&b, MASK_T_CN_RID18, m_rid18(d, t, len, i));
                    }
                    if (HAS(d, MASK_T_BANK_CARD)) {
                        consider(&b, MASK_T_BANK_CARD, m_bank(d, t, len, i));
                    }
                    if (HAS(d, MASK_T_USCC)) {
                        consider(&b, MASK_T_USCC, m_uscc(d, t, len, i));
                    }
                } else if (n >= 15 && n <= 19) {
                    if (n == 15 && HAS(d, MASK_T_CN_RID15)) {
                        consider(&b, MASK_T_CN_RID15, m_rid15(d, t, len, i));
                    }
                    if (n == 15 && HAS(d, MASK_T_CN_MOBILE)) {
                        consider(&b, MASK_T_CN_MOBILE, m_mobile(d, t, len, i));
                    }
                    if (HAS(d, MASK_T_BANK_CARD)) {
                        consider(&b, MASK_T_BANK_CARD, m_bank(d, t, len, i));
                    }
                } else if (n == 11) {
                    if (HAS(d, MASK_T_CN_MOBILE)) {
                        consider(&b, MASK_T_CN_MOBILE, m_mobile(d, t, len, i));
                    }
                } else if (n <= 4 && e + 1 < len) {
                    uint8_t nx = t[e];
                    if (nx == '.' && n <= 3 && HAS(d, MASK_T_IPV4)) {
                        consider(&b, MASK_T_IPV4, m_ipv4(t, len, i));
                    } else if (nx == ' ' || nx == '-') {
                        if ((n == 3 || n == 4 || (n == 2 && nx == '-')) &&
                            HAS(d, MASK_T_CN_MOBILE)) {
                            consider(&b, MASK_T_CN_MOBILE, m_mobile(d, t, len, i));
                        }
                        if (n == 4 && HAS(d, MASK_T_BANK_CARD)) {
                            consider(&b, MASK_T_BANK_CARD, m_bank(d, t, len, i));
                        }
                    }
                }
            } else if ((fl & F_LOWER) == 0) {
                if (n == 18) {
                    if (HAS(d, MASK_T_USCC)) {
                        consider(&b, MASK_T_USCC, m_uscc(d, t, len, i));
                    }
                    if (t[e - 1] == 'X' && HAS(d, MASK_T_CN_RID18)) {
                        consider(&b, MASK_T_CN_RID18, m_rid18(d, t, len, i));
                    }
                } else if (n == 8 || n == 9 || n == 11) {
                    for (mask_type ty = MASK_T_CN_PASSPORT; ty <= MASK_T_HRP; ty++) {
                        if (HAS(d, ty)) {
                            consider(&b, ty, m_letter_id(ty, t, len, i));
                        }
                    }
                }
            } else if (n == 18 && t[e - 1] == 'x' && HAS(d, MASK_T_CN_RID18)) {
                consider(&b, MASK_T_CN_RID18, m_rid18(d, t, len, i));
            }
        } else if (c >= 0x80) {
            /* only when CN_NAME is enabled: jump over the whole character or CJK run */
            uint32_t cp = utf8_cp3(t, len, i);
            if (is_cjk(cp)) {
                uint32_t cps[5];
                size_t k;
                next = cjk_run(t, len, i, cps, 4, &k);
                if (k >= 2 && k <= 4) {
                    consider(&b, MASK_T_CN_NAME, m_name(d, t, len, i));
                }
            } else {
                /* skip the continuation bytes of this character (only real ones) */
                size_t w = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
                while (next < len && next < i + w && (t[next] & 0xC0) == 0x80) {
                    next++;
                }
            }
        } else if (c == '+' && HAS(d, MASK_T_CN_MOBILE)) {
            consider(&b, MASK_T_CN_MOBILE, m_mobile(d, t, len, i));
        }

        if (want_email && is_local(c)) {
            if (!at_valid || at < i) {
                const uint8_t *a = memchr(t + i, '@', len - i);
                at = a != NULL ? (size_t) (a - t) : len;
                at_valid = true;
            }
            if (at < len && at - i <= 64) {
                consider(&b, MASK_T_EMAIL, m_email(t, len, i));
            }
        }
        if (b.end == 0) {
            i = next;
            continue;
        }
    emit:
        if (count < cap) {
            out[count].type = b.type;
            out[count].start = (uint32_t) b.start;
            out[count].end = (uint32_t) b.end;
        }
        count++;
        i = last_end = b.end;
    }
    return count;
}

bool
mask_validate(const mask_detector *d, mask_type t, const char *s, size_t len)
{
    if (d == NULL || s == NULL || len == 0 || len > UINT32_MAX - 1) {
        return false;
    }
    const uint8_t *u = (const uint8_t *) s;
    size_t e = 0;
    switch (t) {
    case MASK_T_CN_RID18:
        e = m_rid18(d, u, len, 0);
        break;
    case MASK_T_CN_RID15:
        e = m_rid15(d, u, len, 0);
        break;
    case MASK_T_CN_MOBILE:
        e = m_mobile(d, u, len, 0);
        break;
    case MASK_T_BANK_CARD:
        e = m_bank(d, u, len, 0);
        break;
    case MASK_T_USCC:
        e = m_uscc(d, u, len, 0);
        break;
    case MASK_T_CN_PASSPORT:
    case MASK_T_HKMO_PERMIT:
    case MASK_T_HRP:
        e = m_letter_id(t, u, len, 0);
        break;
    case MASK_T_EMAIL:
        e = m_email(u, len, 0);
        break;
    case MASK_T_IPV4:
        e = m_ipv4(u, len, 0);
        break;
    case MASK_T_CN_PLATE:
        e = m_plate(u, len, 0);
        break;
    case MASK_T_CN_NAME:
        e = m_name(d, u, len, 0);
        break;
    default:
        return false;
    }
    return e == len;
}
