using System.Globalization;

namespace FlowSec.Sensor.Dns;

/// <summary>Mnemonics for DNS numbers (IANA registries), as <c>dig</c> prints them.</summary>
public static class DnsNames
{
    /// <summary>RR type A.</summary>
    public const ushort TypeA = 1;
    /// <summary>RR type NS.</summary>
    public const ushort TypeNs = 2;
    /// <summary>RR type CNAME.</summary>
    public const ushort TypeCname = 5;
    /// <summary>RR type SOA.</summary>
    public const ushort TypeSoa = 6;
    /// <summary>RR type PTR.</summary>
    public const ushort TypePtr = 12;
    /// <summary>RR type MX.</summary>
    public const ushort TypeMx = 15;
    /// <summary>RR type TXT.</summary>
    public const ushort TypeTxt = 16;
    /// <summary>RR type AAAA.</summary>
    public const ushort TypeAaaa = 28;
    /// <summary>RR type SRV.</summary>
    public const ushort TypeSrv = 33;
    /// <summary>RR type DNAME.</summary>
    public const ushort TypeDname = 39;

    // Preallocated so the hot path does not format a string per event.
    private static readonly Dictionary<ushort, string> Types = new()
    {
        [1] = "A",
        [2] = "NS",
        [5] = "CNAME",
        [6] = "SOA",
        [12] = "PTR",
        [13] = "HINFO",
        [15] = "MX",
        [16] = "TXT",
        [17] = "RP",
        [18] = "AFSDB",
        [24] = "SIG",
        [25] = "KEY",
        [28] = "AAAA",
        [29] = "LOC",
        [33] = "SRV",
        [35] = "NAPTR",
        [36] = "KX",
        [37] = "CERT",
        [39] = "DNAME",
        [41] = "OPT",
        [42] = "APL",
        [43] = "DS",
        [44] = "SSHFP",
        [45] = "IPSECKEY",
        [46] = "RRSIG",
        [47] = "NSEC",
        [48] = "DNSKEY",
        [49] = "DHCID",
        [50] = "NSEC3",
        [51] = "NSEC3PARAM",
        [52] = "TLSA",
        [53] = "SMIMEA",
        [55] = "HIP",
        [59] = "CDS",
        [60] = "CDNSKEY",
        [61] = "OPENPGPKEY",
        [62] = "CSYNC",
        [63] = "ZONEMD",
        [64] = "SVCB",
        [65] = "HTTPS",
        [99] = "SPF",
        [108] = "EUI48",
        [109] = "EUI64",
        [249] = "TKEY",
        [250] = "TSIG",
        [251] = "IXFR",
        [252] = "AXFR",
        [255] = "ANY",
        [256] = "URI",
        [257] = "CAA",
    };

    private static readonly string[] Rcodes =
    [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE",
        "DSOTYPENI", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
    ];

    /// <summary>"A", "AAAA", ... or RFC 3597's "TYPE123" for a type without a mnemonic.</summary>
    public static string TypeName(ushort type) =>
        Types.TryGetValue(type, out var name) ? name : "TYPE" + type.ToString(CultureInfo.InvariantCulture);

    /// <summary>"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ... for an RCODE (header or EDNS-extended).</summary>
    public static string RcodeName(int rcode) => rcode switch
    {
        >= 0 and < 16 => Rcodes[rcode],
        16 => "BADVERS",
        23 => "BADCOOKIE",
        _ => "RCODE" + rcode.ToString(CultureInfo.InvariantCulture),
    };
}
