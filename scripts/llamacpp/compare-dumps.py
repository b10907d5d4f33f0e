import numpy as np, os, sys
order=["attn_norm","Qcur","Kcur","Vcur","kqv_out","attn_out","ffn_norm","ffn_gate","ffn_up","ffn_swiglu","ffn_out","l_out"]
for l in range(30):
    for n in order:
        o=f"/tmp/ourdump/{n}-{l}.bin"; t=f"/tmp/lcdump/{n}-{l}.bin"
        if n=="kqv_out": o=f"/tmp/ourdump/kqv-{l}.bin"
        if n=="ffn_norm": t=f"/tmp/lcdump/ffn_norm-{l}.bin"
        if not (os.path.exists(o) and os.path.exists(t)): continue
        a=np.fromfile(o,dtype=np.float32); b=np.fromfile(t,dtype=np.float32)
        if a.size!=b.size:
            if l == 29 or a.size < b.size: continue
            a=a[:b.size]
        d=np.nonzero(a!=b)[0]
        if len(d): print(l,n,"differ",len(d),"of",a.size,"maxabs",np.abs(a-b).max(), "first", d[:5], a[d[:3]], b[d[:3]]); 

for n in ["result_norm","result_output"]:
    a=np.fromfile(f"/tmp/ourdump/{n}-0.bin",dtype=np.float32); b=np.fromfile(f"/tmp/lcdump/{n}.bin",dtype=np.float32)
    d=np.nonzero(a!=b)[0]; print(n, len(d), "of", a.size, np.abs(a-b).max() if a.size==b.size else "size")
