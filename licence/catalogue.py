"""The seed catalogue: the 14 key licence types of the national e-licence catalogue.

A type code is the defining authority's USCC (GB 32100, real check character)
plus a 3-digit number. Each type carries its data items (name, label, type,
required, format), validity rule and page layout; all of it is stored in the
``licence_types`` table, so an administrator adds a type with data, not code
(``flask licences type-add FILE.json``).
"""

from __future__ import annotations

from tongban.identifiers import uscc_check_char


def _uscc(first17: str) -> str:
    return first17 + uscc_check_char(first17)


# defining authorities (registering authority 1 = government bodies, 13 = mass organisations)
MOHRSS = _uscc("11100000MB0000010")  # 人力资源和社会保障部
MCA = _uscc("11100000MB0000020")  # 民政部
NHC = _uscc("11100000MB0000030")  # 国家卫生健康委员会
SAMR = _uscc("11100000MB0000040")  # 国家市场监督管理总局
MOE = "11100000000013338W"  # 教育部 (the GB/T 36904 test vector's defining authority)
CDPF = _uscc("13100000MC0000050")  # 中国残疾人联合会
MWR = _uscc("11100000MB0000060")  # 水利部
STMA = _uscc("11100000MB0000070")  # 国家烟草专卖局


def item(name: str, label: str, type_: str = "text", required: bool = True, fmt: str | None = None,
         options: list[str] | None = None, example: str | None = None) -> dict:
    d: dict = {"name": name, "label": label, "type": type_, "required": required}
    if fmt:
        d["format"] = fmt
    if example:  # shown to clerks as the format hint (never the regular expression)
        d["example"] = example
    if options:
        d["options"] = options
    return d


GENDER = item("gender", "性别", "select", options=["男", "女"])
DATE = r"^\d{4}-\d{2}-\d{2}$"


def _date(name: str, label: str, required: bool = True) -> dict:
    return {**item(name, label, "date", required, DATE, example="2024-03-01"), "past": True}


def _person(prefix: str, who: str) -> list[dict]:
    return [item(f"{prefix}_name", f"{who}姓名"), item(f"{prefix}_gender", f"{who}性别", "select",
                                                        options=["男", "女"]),
            item(f"{prefix}_nationality", f"{who}国籍"), _date(f"{prefix}_birth_date", f"{who}出生日期"),
            item(f"{prefix}_id_number", f"{who}身份证件号", "id_number")]


_REGISTRATION = [
    item("domicile", "住所"), item("legal_rep", "法定代表人"), item("business_scope", "业务范围", "textarea"),
    item("capital", "注册资金（万元）", "number", fmt=r"^\d+(\.\d+)?$"), item("authority", "业务主管单位"),
    _date("established", "成立日期"),
]

TYPES: list[dict] = [
    {"code": MOHRSS + "001", "name": "社会保障卡", "holder_kind": "citizen", "authority": "人力资源和社会保障部",
     "items": [GENDER, _date("birth_date", "出生日期"), item("card_no", "社会保障卡号", fmt=r"^[A-Z0-9]{9}$"),
               item("bank", "银行账户开户行", required=False)],
     "validity": {"years": 10}, "layout": {"kind": "card", "page": "card", "title": "社会保障卡",
                                           "subtitle": "中华人民共和国"}},
    {"code": MCA + "001", "name": "结婚证", "holder_kind": "citizen", "authority": "民政部",
     "items": [_date("registered_on", "登记日期"), item("cert_no", "结婚证字号", fmt=r"^J\d{6}-\d{4}-\d{6}$"),
               *_person("spouse", "配偶")],
     "validity": {"permanent": True}, "layout": {"kind": "booklet", "page": "A5L", "title": "结婚证",
                                                 "statement": "申请结婚，经审查符合《中华人民共和国民法典》"
                                                              "关于结婚的规定，予以登记，发给此证。"}},
    {"code": MCA + "002", "name": "离婚证", "holder_kind": "citizen", "authority": "民政部",
     "items": [_date("registered_on", "登记日期"), item("cert_no", "离婚证字号", fmt=r"^L\d{6}-\d{4}-\d{6}$"),
               *_person("spouse", "原配偶")],
     "validity": {"permanent": True}, "layout": {"kind": "booklet", "page": "A5L", "title": "离婚证",
                                                 "statement": "申请离婚，经审查符合《中华人民共和国民法典》"
                                                              "关于离婚的规定，准予登记，发给此证。"}},
    {"code": NHC + "001", "name": "出生医学证明", "holder_kind": "citizen", "authority": "国家卫生健康委员会",
     "items": [GENDER, {**item("birth_time", "出生时间", fmt=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"),
                        "past": True},
               item("birth_place", "出生地点"), item("gestation_weeks", "出生孕周", "number", fmt=r"^\d{2}$"),
               item("weight_g", "出生体重（克）", "number", fmt=r"^\d{3,4}$"),
               item("length_cm", "出生身长（厘米）", "number", fmt=r"^\d{2}$"),
               item("mother_name", "母亲姓名"), item("mother_id", "母亲有效身份证件号码", "id_number"),
               item("father_name", "父亲姓名", required=False),
               item("father_id", "父亲有效身份证件号码", "id_number", required=False),
               item("institution", "接生机构名称"), item("cert_no", "出生医学证明编号", fmt=r"^[A-Z]\d{9}$")],
     "validity": {"permanent": True}, "layout": {"kind": "form", "page": "A4", "title": "出生医学证明",
                                                 "subtitle": "Medical Certificate of Birth"}},
    {"code": SAMR + "001", "name": "营业执照", "holder_kind": "organisation", "authority": "国家市场监督管理总局",
     # registration data comes from the market register; a licence can be issued before it is complete
     "items": [item("entity_type", "类型", "select", required=False,
                    options=["有限责任公司", "股份有限公司", "个人独资企业", "合伙企业", "个体工商户"]),
               item("legal_rep", "法定代表人", required=False), item("capital", "注册资本", required=False),
               {**_date("established", "成立日期", required=False), "default": "today"},
               item("term", "营业期限", required=False), item("domicile", "住所", required=False),
               item("business_scope", "经营范围", "textarea", required=False)],
     "validity": {"permanent": True}, "layout": {"kind": "permit", "page": "A4L", "title": "营业执照",
                                                 "number_label": "统一社会信用代码"}},
    {"code": SAMR + "002", "name": "食品生产许可证", "holder_kind": "organisation",
     "authority": "国家市场监督管理总局",
     "items": [item("permit_no", "许可证编号", fmt=r"^SC\d{14}$"), item("legal_rep", "法定代表人（负责人）"),
               item("domicile", "住所"), item("site", "生产地址"), item("categories", "食品类别", "textarea"),
               item("supervisor", "日常监督管理人员", required=False)],
     "validity": {"years": 5}, "layout": {"kind": "permit", "page": "A4L", "title": "食品生产许可证"}},
    {"code": MOE + "001", "name": "高等教育学位证书", "holder_kind": "citizen", "authority": "教育部",
     "items": [GENDER, _date("birth_date", "出生日期"), item("university", "学位授予单位"),
               item("discipline", "学科门类"), item("degree", "学位", "select",
                                                    options=["学士", "硕士", "博士"]),
               _date("conferred_on", "授予日期"), item("cert_no", "证书编号", fmt=r"^\d{16}$")],
     "validity": {"permanent": True},
     "layout": {"kind": "diploma", "page": "A4L", "title": "学位证书",
                "text": "{holder_name}，{gender}，{birth_date}生。在{university}{discipline}学科完成了"
                        "规定的学业，成绩合格，经审核符合《中华人民共和国学位法》的规定，授予{discipline}"
                        "{degree}学位。"}},
    {"code": MOE + "002", "name": "高等教育学历证书", "holder_kind": "citizen", "authority": "教育部",
     "items": [GENDER, _date("birth_date", "出生日期"), item("school", "学校名称"), item("major", "专业"),
               item("level", "层次", "select", options=["专科", "本科", "研究生"]),
               item("years", "学制（年）", "number", fmt=r"^\d$"), _date("start_on", "入学日期"),
               _date("graduated_on", "毕业日期"), item("cert_no", "证书编号", fmt=r"^\d{18}$")],
     "validity": {"permanent": True},
     "layout": {"kind": "diploma", "page": "A4L", "title": "毕业证书",
                "text": "学生{holder_name}，性别{gender}，{birth_date}生，于{start_on}至{graduated_on}在本校"
                        "{major}专业{years}年制{level}学习，修完教学计划规定的全部课程，成绩合格，准予毕业。"}},
    {"code": MCA + "003", "name": "社会团体法人登记证书", "holder_kind": "organisation", "authority": "民政部",
     "items": _REGISTRATION, "validity": {"years": 5},
     "layout": {"kind": "permit", "page": "A4L", "title": "社会团体法人登记证书",
                "number_label": "统一社会信用代码"}},
    {"code": MCA + "004", "name": "民办非企业单位登记证书", "holder_kind": "organisation", "authority": "民政部",
     "items": _REGISTRATION, "validity": {"years": 5},
     "layout": {"kind": "permit", "page": "A4L", "title": "民办非企业单位登记证书",
                "number_label": "统一社会信用代码"}},
    {"code": MCA + "005", "name": "基金会法人登记证书", "holder_kind": "organisation", "authority": "民政部",
     "items": [*_REGISTRATION[:3], item("capital", "原始基金数额（万元）", "number", fmt=r"^\d+(\.\d+)?$"),
               item("fund_kind", "公募/非公募", "select", options=["公募", "非公募"]), *_REGISTRATION[4:]],
     "validity": {"years": 5},
     "layout": {"kind": "permit", "page": "A4L", "title": "基金会法人登记证书",
                "number_label": "统一社会信用代码"}},
    {"code": CDPF + "001", "name": "残疾人证", "holder_kind": "citizen", "authority": "中国残疾人联合会",
     "items": [GENDER, _date("birth_date", "出生日期"),
               item("category", "残疾类别", "select",
                    options=["视力残疾", "听力残疾", "言语残疾", "肢体残疾", "智力残疾", "精神残疾", "多重残疾"]),
               item("grade", "残疾等级", "select", options=["一级", "二级", "三级", "四级"]),
               item("address", "户籍地址"), item("guardian", "监护人", required=False)],
     "validity": {"years": 10}, "layout": {"kind": "card", "page": "card", "title": "残疾人证",
                                           "subtitle": "中华人民共和国"}},
    {"code": MWR + "001", "name": "取水许可证", "holder_kind": "organisation", "authority": "水利部",
     "items": [item("permit_no", "取水许可证编号", fmt=r"^取水\S+\[\d{4}\]第\d+号$"), item("legal_rep", "法定代表人"),
               item("intake_site", "取水地点"), item("source", "水源类型", "select", options=["地表水", "地下水"]),
               item("volume", "取水量（万立方米/年）", "number", fmt=r"^\d+(\.\d+)?$"), item("use", "取水用途"),
               item("outfall", "退水地点", required=False)],
     "validity": {"years": 5, "max_years": 10},
     "layout": {"kind": "permit", "page": "A4L", "title": "取水许可证"}},
    {"code": STMA + "001", "name": "烟草专卖零售许可证", "holder_kind": "organisation", "authority": "国家烟草专卖局",
     "items": [item("permit_no", "许可证号", fmt=r"^\d{12}$"), item("manager", "负责人（经营者）"),
               item("shop_name", "企业（字号）名称"), item("address", "经营场所"),
               item("scope", "经营范围")],
     "validity": {"years": 5}, "layout": {"kind": "permit", "page": "A4L", "title": "烟草专卖零售许可证"}},
]


# filled-in examples shown to clerks as format hints (never the regular expression)
EXAMPLES: dict[tuple[str, str], str] = {
    ("社会保障卡", "card_no"): "A12345678",
    ("结婚证", "cert_no"): "J110105-2024-000123",
    ("离婚证", "cert_no"): "L110105-2024-000123",
    ("出生医学证明", "birth_time"): "2024-03-01 08:30",
    ("出生医学证明", "gestation_weeks"): "39",
    ("出生医学证明", "weight_g"): "3250",
    ("出生医学证明", "length_cm"): "50",
    ("出生医学证明", "cert_no"): "Q110012345",
    ("食品生产许可证", "permit_no"): "SC10611010500123",
    ("高等教育学位证书", "cert_no"): "1000132024001234",
    ("高等教育学历证书", "years"): "4",
    ("高等教育学历证书", "cert_no"): "100011202405001234",
    ("取水许可证", "permit_no"): "取水（京）字[2024]第001号",
    ("烟草专卖零售许可证", "permit_no"): "110105100123",
    ("取水许可证", "volume"): "12.5",
    ("*", "capital"): "500",
}
for _t in TYPES:
    for _i in _t["items"]:
        _ex = EXAMPLES.get((_t["name"], _i["name"])) or EXAMPLES.get(("*", _i["name"]))
        if _ex and _i.get("format"):
            _i["example"] = _ex
